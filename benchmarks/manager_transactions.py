"""POST /v1/transactions through one manager to a real consensus cluster: latency and CPU per request.

A local T-PBFT cluster (`--nodes`, default 4) and one manager process routing to it. An open-loop client
sends `--rate` submissions per second for `--seconds`, each a fresh payload under a fresh idempotency key,
so concurrent submissions overlap as they would from many clients. Reported: the client's p50 / p99 / max
of the 202 answers, the manager's CPU per request (/proc) and, from a second pass under `strace -f -c`,
its fsync/fdatasync calls per request. `--disk-writer` runs a process beside it that writes 4 MiB blocks
and fdatasyncs every 32 MiB at about `--disk-writer` MiB/s, as a site's object transfers and the consensus
logs do in `dwcp up`: a durable commit then waits behind their writeback (a lone 4 KiB fdatasync on this
VM: 0.2 ms idle, p50 8 ms / p90 23 ms beside such a writer).

    .venv/bin/python benchmarks/manager_transactions.py --rate 100 --seconds 20 --disk-writer 40 \\
        --out runs/manager_transactions.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from _harness import RawHttp, cpu_seconds
from manager_small_put import fsyncs_during
from manager_transfer import health_buckets

from dwcp.consensus.node.cluster import LocalCluster
from dwcp.runtime.auth import bearer_header, client_token
from dwcp.runtime.ports import free_port


def start_manager(work: Path, cluster: LocalCluster) -> tuple[subprocess.Popen, int]:
    port = free_port()
    instances = [{"host": "127.0.0.1", "port": h, "ports": {"consensus": c}}
                 for h, c in zip(cluster.http_ports, cluster.consensus_ports, strict=True)]
    inv = work / "inventory.yaml"
    inv.write_text(yaml.safe_dump({"name": "txbench", "security": {"token_file": str(cluster.token_file)},
                                   "services": {"manager": {"instances": [{"host": "127.0.0.1", "port": port,
                                                                           "ports": {"peer": free_port()}}]},
                                                cluster.service: {"instances": instances}}}))
    log = open(work / "manager.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([sys.executable, "-m", "dwcp", "serve", "manager", "--instance", "0", "--inventory",
                             str(inv), "--data-dir", str(work / "data"), "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"manager did not start; see {work}/manager.log")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code in (200, 503):
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.2)


def disk_writer(path: Path, mib_per_s: float) -> subprocess.Popen:
    """A process that keeps the disk's writeback busy the way bulk transfers do, until it is killed."""
    code = ("import os,sys,time\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT|os.O_TRUNC)\nb=os.urandom(4<<20)\n"
            "n=0\nwhile True:\n os.write(fd,b); n+=1; time.sleep(4/float(sys.argv[2]))\n"
            " if n%8==0: os.fdatasync(fd); os.lseek(fd,0,0)\n")
    return subprocess.Popen([sys.executable, "-c", code, str(path), str(mib_per_s)], start_new_session=True)


async def submit_open_loop(port: int, headers: dict[str, str], tag: str, rate: float, seconds: float,
                           direct: bool = False) -> tuple[list[float], collections.Counter]:
    """`rate * seconds` submissions on a fixed schedule; latencies of the 202s and a count per outcome.
    `direct`: raw payloads to a consensus node's own POST /v1/transactions (the peer's figure)."""
    client = RawHttp(port, headers)
    latencies: list[float] = []
    outcomes: collections.Counter = collections.Counter()

    async def one(i: int) -> None:
        payload = f"{tag}-{i}-".encode() + os.urandom(8)
        if direct:
            body, kind = payload, "application/octet-stream"
        else:
            body, kind = json.dumps({"payload": base64.b64encode(payload).decode(), "cluster": "tpbft",
                                     "idempotency_key": f"{tag}-{i}"}).encode(), "application/json"
        start = time.perf_counter()
        try:
            status, _ = await client.post("/v1/transactions", body, kind)
        except (OSError, asyncio.IncompleteReadError) as exc:
            outcomes[type(exc).__name__] += 1
            return
        outcomes[status] += 1
        if status == 202:
            latencies.append(time.perf_counter() - start)

    tasks = []
    t0 = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    client.close()
    return latencies, outcomes


def figures(latencies: list[float], outcomes: collections.Counter, cpu: float | None) -> dict:
    ordered = sorted(latencies) or [float("nan")]

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 2)

    out = {"outcomes": {str(k): v for k, v in outcomes.items()}, "p50_ms": at(0.5), "p99_ms": at(0.99),
           "max_ms": round(ordered[-1] * 1e3, 2)}
    if cpu is not None:
        out["manager_cpu_ms_per_request"] = round(cpu / max(len(latencies), 1) * 1e3, 3)
    return out


def within(before: dict[str, float], after: dict[str, float], bounds: tuple[str, ...]) -> dict[str, float]:
    """From two scrapes of one cumulative histogram: the share of what was observed in between at or under
    each bound (le)."""
    total = max(after.get("+Inf", 0.0) - before.get("+Inf", 0.0), 1.0)
    return {f"within_{float(le) * 1e3:g}ms": round((after.get(le, 0.0) - before.get(le, 0.0)) / total, 4)
            for le in bounds}


def with_health_probe(url: str, seconds: float, run) -> tuple[object, dict]:
    """`run()`'s result, and /health as seen meanwhile: a client in its own process at a raised priority
    (health_probe.py), the service's own /health histogram and its event loop's lag histogram."""
    health0, lag0 = health_buckets(url), health_buckets(url, "dwcp_event_loop_lag_seconds_bucket{", "")
    prober = subprocess.Popen([sys.executable, str(Path(__file__).with_name("health_probe.py")), "--port",
                               url.rsplit(":", 1)[1], "--seconds", str(seconds + 30)], stdout=subprocess.PIPE,
                              text=True)
    try:
        result = run()
    finally:
        prober.send_signal(signal.SIGTERM)
        client = json.loads(prober.communicate(timeout=30)[0])
    health1, lag1 = health_buckets(url), health_buckets(url, "dwcp_event_loop_lag_seconds_bucket{", "")
    return result, {"client": client, "server": within(health0, health1, ("0.001", "0.002")),
                    "loop_lag": within(lag0, lag1, ("0.001", "0.01", "0.05"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100.0, help="submissions per second (open loop)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--disk-writer", type=float, default=0.0, metavar="MIB_PER_S",
                    help="a bulk writer on the same disk at about this rate (see above); 0: none")
    ap.add_argument("--no-strace", action="store_true", help="skip the pass that counts sync calls")
    ap.add_argument("--out", type=Path, default=Path("manager_transactions.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dwcp-tx-bench-"))
    writer = None
    with LocalCluster(work / "cluster", args.nodes) as cluster:
        cluster.start_all()
        cluster.wait_ready()
        manager, port = start_manager(work, cluster)
        headers = bearer_header(client_token(cluster.token_file))
        try:
            asyncio.run(submit_open_loop(port, headers, "warm", min(args.rate, 50.0), 2.0))
            if args.disk_writer:
                writer = disk_writer(work / "bulk.bin", args.disk_writer)
                time.sleep(1.0)
            direct = figures(*asyncio.run(submit_open_loop(cluster.http_ports[0], headers, "direct", args.rate,
                                                           min(args.seconds, 5.0), direct=True)), None)
            before = cpu_seconds({"m": manager.pid})["m"]
            timed, health = with_health_probe(f"http://127.0.0.1:{port}", args.seconds, lambda: asyncio.run(
                submit_open_loop(port, headers, "timed", args.rate, args.seconds)))
            routed = figures(*timed, cpu_seconds({"m": manager.pid})["m"] - before)
            syncs = {} if args.no_strace else fsyncs_during(manager.pid, work, lambda: asyncio.run(
                submit_open_loop(port, headers, "traced", args.rate, min(args.seconds, 5.0))))
            traced = int(args.rate * min(args.seconds, 5.0))
        finally:
            if writer is not None:
                os.killpg(writer.pid, signal.SIGKILL)
                writer.wait()
            os.killpg(manager.pid, signal.SIGTERM)
            manager.wait(30)
    result = {"rate": args.rate, "seconds": args.seconds, "nodes": args.nodes, "disk_writer_mib_s": args.disk_writer,
              "through_manager": routed, "node_direct": direct, "health": health,
              "syncs_per_request": {k: round(v / traced, 3) for k, v in syncs.items()},
              "load_average": round(os.getloadavg()[0], 1)}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"through the manager at {args.rate:g}/s: {routed['outcomes']}, p50 {routed['p50_ms']} ms, p99 "
          f"{routed['p99_ms']} ms, max {routed['max_ms']} ms; manager {routed['manager_cpu_ms_per_request']} CPU ms "
          f"and syncs {result['syncs_per_request']} per request", flush=True)
    print(f"a node's own POST at the same rate (peer): {direct['outcomes']}, p50 {direct['p50_ms']} ms, p99 "
          f"{direct['p99_ms']} ms, max {direct['max_ms']} ms", flush=True)
    print(f"/health meanwhile: client {health['client']}; server {health['server']}; event loop lag "
          f"{health['loop_lag']}; "
          f"disk writer {args.disk_writer:g} MiB/s; load average {result['load_average']}", flush=True)
    subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
