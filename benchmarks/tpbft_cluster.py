"""T-PBFT on a real cluster: 10 `dwcp serve tpbft` processes on loopback, transactions over HTTP.

Seed baseline: "T-PBFT latency: <60ms". Target (issue #4): commit latency p99 <= 20 ms at 1,000 tx/s
offered load, and the highest sustained rate.

Latency is measured by the client, per transaction: from sending `POST /v1/transactions?wait=true`
(to a node chosen round-robin) to the 200 answer, which the node sends only once the block holding
the transaction is fsynced in its log. So it is submit -> durable commit, plus one loopback HTTP
round trip. The load is open-loop (a fixed schedule, never slowed by slow answers).

    .venv/bin/python benchmarks/tpbft_cluster.py                   # 1,000 tx/s for 20 s, then a ramp
    .venv/bin/python benchmarks/tpbft_cluster.py --rate 1000 --duration 30 --no-ramp
    .venv/bin/python benchmarks/tpbft_cluster.py --protocol pbft     # classic PBFT baseline
    .venv/bin/python benchmarks/tpbft_cluster.py --setting max_inflight=2 --batch-timeout-ms 10

Measured 2026-11-25 22:25 UTC (commit 9649db2) on the shared 2-CPU dev VM, a simulator campaign running
beside it at nice 19, node defaults (max_inflight 1, batch_timeout_ms 5, forward_interval_ms 5):
    .venv/bin/python benchmarks/tpbft_cluster.py --rate 1000 --duration 10 --ramp-rates 1500,2000,2500
  1000 tx/s: p50 78 ms, p99 182 ms, 32 tx/block, node CPU 1.56 cores (1.56 ms/tx), 0 view changes.
  1500 tx/s: p50 114 ms, p99 391 ms.  2000 tx/s: p50 147 ms, p99 462 ms.  2500 tx/s: 2297 committed,
  p50 953 ms, p99 2.8 s (saturated; "sustained" by the >=95%-committed rule only).
  100 tx/s: p50 61 ms, p99 148 ms (46 / 102 ms with --batch-timeout-ms 20).
  Classic PBFT (--protocol pbft) at 1000 tx/s: p50 89 ms, p99 214 ms.
  The code before this session's changes (ed5fe1a, same conditions, its defaults): 861 tx/s committed of
  1000 offered (not sustained), p50 1272 ms, p99 5354 ms, 2.07 ms CPU/tx, one view change.
  Target p99 <= 20 ms at 1,000 tx/s: missed by ~9x. Why, from the CPU figures: each block costs every
  node ~2.8 ms of CPU (about 45% of it the ~15 Ed25519 checks), ~28 ms for the cluster, and a node at
  1,000 tx/s spends ~0.15 CPU; ten nodes need ~1.5 of the 2 CPUs, so every message hop queues for a CPU,
  and even one block's three phases take ~10-15 ms of wall time when every voter must run in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dwcp.consensus.node.cluster import LocalCluster

SEED_BASELINE_S = 0.060
TARGET_P99_S = 0.020


class RawHttp:
    """Keep-alive HTTP/1.1 connections per node; ~10x less client CPU than a general client at 1k req/s."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        while self.idle:
            conn = self.idle.pop()
            try:
                return await self._exchange(conn, path, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                # The server closes a connection idle past its keep-alive timeout; a request on such a
                # connection was never read (no answer byte came back), so it is safe to send again.
                conn[1].close()
        return await self._exchange(await asyncio.open_connection("127.0.0.1", self.port), path, body)

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str,
                        body: bytes) -> tuple[int, bytes]:
        reader, writer = conn
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        payload = await reader.readexactly(length)
        self.idle.append(conn)
        return status, payload

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


@dataclass
class Run:
    rate: float
    duration: float
    latencies: list[float] = field(default_factory=list)
    committed: int = 0
    pending: int = 0  # answered 202: not committed within the wait timeout
    errors: int = 0
    elapsed: float = 0.0
    node_cpu_s: float = 0.0  # CPU (user + system) all node processes spent during the run
    client_cpu_s: float = 0.0  # ... and this load generator
    blocks: int = 0  # heights committed during the run (the highest node's)
    busiest_node: int = -1  # the node that spent the most CPU (the primary, normally) ...
    busiest_cpu_s: float = 0.0  # ... and how much

    @property
    def achieved(self) -> float:
        return self.committed / self.elapsed if self.elapsed else 0.0

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def sustained(self) -> bool:
        """Everything committed, and at ~the offered rate: a backlog that only drains after the window
        (commit rate over the whole run under 90% of the offered one) is saturation, not a sustained rate."""
        return (self.committed >= 0.95 * self.rate * self.duration and self.pending == 0 and self.errors == 0
                and self.achieved >= 0.9 * self.rate)


def node_cpu_seconds(cluster: LocalCluster) -> dict[int, float]:
    """User + system CPU of each node process so far (/proc/PID/stat), so cost per tx and per block can be
    stated in CPU time, which a shared machine's other load disturbs far less than latency."""
    out = {}
    for node, proc in cluster.procs.items():
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[node] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def top_height(cluster: LocalCluster) -> int:
    with httpx.Client(timeout=5) as client:
        return max(client.get(f"{u}/v1/status").json()["height"] for u in cluster.urls)


def measured(cluster: LocalCluster, rate: float, duration: float) -> Run:
    """One open-loop run, with the CPU the nodes and the client spent and the blocks committed meanwhile."""
    h0, cpu0, own0 = top_height(cluster), node_cpu_seconds(cluster), time.process_time()
    run = asyncio.run(offer(cluster, rate, duration))
    spent = {n: t - cpu0.get(n, 0.0) for n, t in node_cpu_seconds(cluster).items()}
    run.node_cpu_s, run.client_cpu_s = sum(spent.values()), time.process_time() - own0
    run.busiest_node, run.busiest_cpu_s = max(spent.items(), key=lambda kv: kv[1], default=(-1, 0.0))
    run.blocks = top_height(cluster) - h0
    return run


async def offer(cluster: LocalCluster, rate: float, duration: float, wait_timeout: float = 10.0) -> Run:
    clients = [RawHttp(p) for p in cluster.http_ports]
    run = Run(rate, duration)
    prefix = os.urandom(6).hex().encode()
    tasks: set[asyncio.Task] = set()

    async def one(i: int) -> None:
        body = prefix + b"-%d-" % i + b"." * 40
        start = time.perf_counter()
        try:
            status, _ = await clients[i % len(clients)].post(f"/v1/transactions?wait=true&timeout={wait_timeout}", body)
        except (OSError, asyncio.IncompleteReadError):
            run.errors += 1
            return
        if status == 200:
            run.committed += 1
            run.latencies.append(time.perf_counter() - start)
        elif status == 202:
            run.pending += 1
        else:
            run.errors += 1

    total = int(rate * duration)
    t0 = time.perf_counter()
    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    run.elapsed = time.perf_counter() - t0
    for c in clients:
        c.close()
    return run


def settle(cluster: LocalCluster, timeout: float = 60.0) -> dict:
    """Wait (bounded) for the backlog of an overloaded run to drain; returns a summary of the nodes."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while True:
            states = [client.get(f"{u}/v1/status").json() for u in cluster.urls]
            if all(s["pending"] == 0 for s in states) or time.monotonic() > deadline:
                return {"pending": sum(s["pending"] for s in states), "height": max(s["height"] for s in states),
                        "view_changes": max(s.get("view_changes", 0) for s in states)}
            time.sleep(0.5)


def check_logs_agree(cluster: LocalCluster) -> tuple[int, int]:
    """Every node's block digest at every height it has, compared; returns (min height, heights compared)."""
    with httpx.Client(timeout=5) as client:
        heights = [client.get(f"{u}/v1/status").json()["height"] for u in cluster.urls]
        top = min(heights)
        for h in range(max(1, top - 200), top + 1):
            digests = {client.get(f"{u}/v1/blocks/{h}").json()["digest"] for u in cluster.urls}
            if len(digests) != 1:
                raise AssertionError(f"nodes disagree at height {h}: {digests}")
    return top, min(top, 201)


def record(results: dict, run: Run, cluster: LocalCluster) -> None:
    after = settle(cluster)
    print(report(run) + f"  | after: {after}", flush=True)
    results["runs"].append(vars(run) | {"latencies": None, "p50": run.quantile(0.5), "p99": run.quantile(0.99),
                                        "achieved": run.achieved, "after": after})


def report(run: Run) -> str:
    ms = 1000
    lat = run.latencies
    worst, mean = (max(lat) * ms, statistics.fmean(lat) * ms) if lat else (float("nan"), float("nan"))
    return (
        f"offered {run.rate:7.0f} tx/s  committed {run.achieved:7.0f} tx/s  "
        f"p50 {run.quantile(0.5) * ms:6.1f} ms  p99 {run.quantile(0.99) * ms:6.1f} ms  "
        f"max {worst:6.1f} ms  mean {mean:5.1f} ms  "
        f"pending {run.pending}  errors {run.errors}  {'sustained' if run.sustained else 'NOT sustained'}\n"
        f"    cost: {run.blocks} blocks ({run.committed / max(run.blocks, 1):.1f} tx/block); node CPU "
        f"{run.node_cpu_s:.1f} s = {run.node_cpu_s / run.elapsed if run.elapsed else 0:.2f} cores, "
        f"{1e3 * run.node_cpu_s / max(run.committed, 1):.2f} ms/tx; busiest node {run.busiest_node} "
        f"{run.busiest_cpu_s / run.elapsed if run.elapsed else 0:.2f} cores; client CPU {run.client_cpu_s:.1f} s"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--protocol", choices=["tpbft", "pbft"], default="tpbft")
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--ramp", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--ramp-rates", default="1500,2000,3000,4000,6000", help="Tried in turn after a sustained run.")
    ap.add_argument("--ramp-down-rates", default="700,500,300,200,100", help="Tried in turn after a failed run.")
    ap.add_argument("--ramp-duration", type=float, default=10.0)
    ap.add_argument("--batch-timeout-ms", type=float, default=None)
    ap.add_argument("--view-change-timeout-ms", type=float, default=None)
    ap.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                    help="Any other ConsensusSettings field, value as JSON (repeatable), e.g. max_inflight=2.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    ap.add_argument("--keep", action="store_true", help="Keep the cluster's logs and data.")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="dwcp-bench-tpbft-"))
    settings: dict = {"protocol": args.protocol}
    if args.batch_timeout_ms is not None:
        settings["batch_timeout_ms"] = args.batch_timeout_ms
    if args.view_change_timeout_ms is not None:
        settings["view_change_timeout_ms"] = args.view_change_timeout_ms
    for item in args.setting:
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    print(f"# {args.nodes}-node {args.protocol} cluster on loopback, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start; settings {settings}; logs in {root}", flush=True)
    results: dict = {"nodes": args.nodes, "protocol": args.protocol, "cpus": os.cpu_count(), "runs": []}
    with LocalCluster(root, args.nodes, service="tpbft", settings=settings) as cluster:
        cluster.start_all()
        cluster.wait_ready(timeout=120)
        asyncio.run(offer(cluster, min(args.rate, 200.0), args.warmup))  # warm up connections and caches
        settle(cluster)
        main_run = measured(cluster, args.rate, args.duration)
        record(results, main_run, cluster)
        best = main_run.rate if main_run.sustained else 0.0
        # Up from the target rate while it holds; down from it until one holds (max sustained either way).
        ramp = args.ramp_rates if main_run.sustained else args.ramp_down_rates
        if args.ramp:
            for rate in (float(r) for r in ramp.split(",")):
                run = measured(cluster, rate, args.ramp_duration)
                record(results, run, cluster)
                if run.sustained:
                    best = max(best, rate)
                if run.sustained != main_run.sustained:
                    break  # going up it stopped holding, or going down it started to
        top, compared = check_logs_agree(cluster)
        print(f"# logs agree: the last {compared} heights (up to {top}) have one digest across all {args.nodes} nodes")
    p99 = main_run.quantile(0.99)
    print(f"# T-PBFT commit latency at {args.rate:.0f} tx/s: p50 {main_run.quantile(0.5) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms (seed baseline < {SEED_BASELINE_S * 1000:.0f} ms; "
          f"target p99 <= {TARGET_P99_S * 1000:.0f} ms: {'met' if p99 <= TARGET_P99_S else 'MISSED'})")
    print(f"# max sustained: {best:.0f} tx/s offered (>=95% committed, none left pending)")
    results["max_sustained"] = best
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
