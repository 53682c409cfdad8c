"""Narwhal + Bullshark on a real loopback cluster: `dwcp serve bullshark` nodes, each with its worker
process, and streaming clients (one per worker) in this process, as Narwhal's own benchmark does.

Seed baseline: "Bullshark >300K tx/s" (all 100 nodes). Issue 13's target for this machine: a 4-node
loopback cluster, 512 B transactions, consensus TPS >= 300,000, latency reported. Narwhal's published
local run (4 nodes, 512 B tx, 500 KB batches, 1,000 B headers, 50,000 tx/s input) printed consensus
46,478 tx/s at 464 ms and end-to-end 46,149 tx/s at 557 ms.

What is measured, over the window after `--warmup` (Narwhal's definitions):
- consensus TPS: transactions in sub-DAGs node 0 committed per second (its
  bullshark_transactions_committed_total); consensus latency: certificate creation -> the anchor
  ordering it (bullshark_consensus_latency_seconds, mean over the window);
- end-to-end TPS: transactions the clients sent in the window that are committed, per second;
  end-to-end latency: sampled transactions (first byte 0), client send -> commit at the worker that
  received them (samples.log), mean and p50/p99;
- CPU by role (user + system from /proc over the window): primaries, workers, clients; with
  --profile, where one primary's and one worker's CPU goes (py-spy phases, benchmarks/_harness).

    .venv/bin/python benchmarks/bullshark_cluster.py --nodes 4 --rate 50000 --tx-size 512 \\
        --batch-size 500000 --duration 20 --json bullshark.json
    .venv/bin/python benchmarks/bullshark_cluster.py --rates 5000,20000,50000 --png latency.png

Clients send a prepared block of 1,000 transactions again and again; the first transaction of each
block carries a counter (and is a sample), so every batch differs (a repeated batch
would be deduplicated by digest) while the client spends almost no CPU per transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import PhaseProfile, cpu_seconds, format_phases, spent  # noqa: E402

from dwcp.consensus.bullshark.worker import CLIENT, COUNT, TX_LEN  # noqa: E402
from dwcp.consensus.node.cluster import LocalCluster  # noqa: E402

# Every BLOCK_TXS transactions one carries the client's tag (unique), so any batch of that many or more is unique.
# With 1,000 a 500 KB batch (976 of 512 B) could fall between two tags; such batches were byte-identical across
# clients, so workers stored them as duplicates and the log committed them once (counted once): 13-18 of ~220
# batches per worker in 10 s at 100,000 tx/s.
BLOCK_TXS = 100
SAMPLE_EVERY_BLOCK = 10  # a sample transaction per 1,000 (its send time against its commit: e2e latency)
NARWHAL_LOCAL = {"consensus_tps": 46478, "consensus_latency_s": 0.464, "e2e_tps": 46149, "e2e_latency_s": 0.557}


class Client:
    """One streaming client: a prepared block of transactions, its first one patched per send."""

    def __init__(self, index: int, port: int, tx_size: int, sample_every: int = SAMPLE_EVERY_BLOCK) -> None:
        self.index, self.port, self.tx_size, self.sample_every = index, port, tx_size, sample_every
        body = b"\1" + b"." * (tx_size - 1)
        self.block = bytearray((TX_LEN.pack(tx_size) + body) * BLOCK_TXS)
        self.sent = 0
        self.blocks = 0
        self.acked = 0
        self.samples: dict[int, float] = {}  # sample id -> wall-clock send time
        self.sent_at: list[tuple[float, int]] = []  # (time, total sent), one per block
        self.blocked = 0.0  # seconds spent waiting in drain() (the worker not reading: backpressure)
        self.shared = None  # (array, slot): sent and blocked published to the benchmark's process

    def next_block(self) -> bytes:
        """The next BLOCK_TXS transactions: the first carries the tag (client, block), a sample every few.

        A copy: the block is patched again for the next one, and uvloop's transport may keep what it could not
        send yet without copying it (then several queued blocks all became the last one: equal batches, committed
        once, ~500 received duplicates per worker in 10 s; session 7)."""
        self.blocks += 1
        tag = (self.index << 40) | self.blocks
        sample = self.blocks % self.sample_every == 0
        struct.pack_into("!BQ", self.block, TX_LEN.size, 0 if sample else 1, tag)
        if sample:
            self.samples[tag] = time.time()
        return bytes(self.block)

    async def run(self, rate: float, duration: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(CLIENT)
        acks = asyncio.ensure_future(self._acks(reader))
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < duration:
                due = int(rate * elapsed / BLOCK_TXS) + 1 - self.blocks
                for _ in range(max(0, due)):
                    writer.write(self.next_block())
                    self.sent += BLOCK_TXS
                    self.sent_at.append((time.time(), self.sent))
                self._publish()
                waited = time.monotonic()
                try:  # backpressure: the worker stops reading while its batches wait for a quorum
                    await asyncio.wait_for(writer.drain(), max(0.01, duration - (time.monotonic() - started)))
                except TimeoutError:
                    break
                finally:
                    self.blocked += time.monotonic() - waited
                    self._publish()
                await asyncio.sleep(0.005)
        finally:
            await asyncio.sleep(1.0)
            acks.cancel()
            writer.close()

    def _publish(self) -> None:
        if self.shared is not None:
            array, slot = self.shared
            array[2 * slot], array[2 * slot + 1] = self.sent, self.blocked

    async def _acks(self, reader: asyncio.StreamReader) -> None:
        while True:
            (self.acked,) = COUNT.unpack(await reader.readexactly(COUNT.size))


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def scrape(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=5).text


def scrape_all(cluster: LocalCluster, n: int) -> list[str]:
    out = []
    for i in range(n):
        try:
            out.append(scrape(cluster.url(i)))
        except httpx.HTTPError:  # a node that is down has no figures
            out.append("")
    return out


WORKER_COUNTS = {"stored": "bullshark_worker_batches_stored_total", "sealed": "bullshark_batches_sealed_total",
                 "skipped": "bullshark_worker_batches_skipped_total",
                 "requested": "bullshark_worker_batch_requests_total",
                 "served": "bullshark_worker_batches_served_total",
                 "duplicates": "bullshark_worker_duplicate_batches_total",
                 "paused_us": "bullshark_worker_clients_paused_microseconds_total",
                 "quorum_batches": "bullshark_worker_batches_acknowledged_total",
                 "quorum_wait_us": "bullshark_worker_quorum_wait_microseconds_total"}


def per_worker(before: tuple, after: tuple, window: float) -> dict[int, dict]:
    """Each node's worker over the window: CPU cores and its batch counts (a lagging worker stands out:
    fewer stored, more requested; its peers skip it and serve it)."""
    cpu = spent(before[3], after[3])
    out = {}
    for i, (b, a) in enumerate(zip(before[6], after[6], strict=True)):
        row = {"cores": round(cpu[i] / window, 3) if i in cpu else None}
        row.update({k: round(metric(a, name) - metric(b, name)) for k, name in WORKER_COUNTS.items()})
        paused, waits, acked = row.pop("paused_us"), row.pop("quorum_wait_us"), row.pop("quorum_batches")
        row["paused_share"] = round(paused / 1e6 / window, 3)  # of the window, clients not read (flow control)
        row["quorum_wait_ms"] = round(waits / 1e3 / acked, 1) if acked else None  # mean seal -> 2f+1 acks
        out[i] = row
    return out


def worker_pids(node_pids: dict[int, int]) -> dict[int, int]:
    out = {}
    for i, pid in node_pids.items():
        children = Path(f"/proc/{pid}/task/{pid}/children")
        kids = children.read_text().split() if children.exists() else []
        if kids:
            out[i] = int(kids[0])
    return out


def sample_commits(root: Path, i: int) -> list[tuple[int, float]]:
    """Worker `i`'s samples.log: (sample id, wall-clock commit time) per committed sample transaction."""
    log = root / "data" / f"bullshark-{i}" / "worker" / "samples.log"
    return [(int(sample), float(at)) for sample, at in (line.split() for line in log.read_text().splitlines())] \
        if log.exists() else []


def sample_latencies(root: Path, n: int, samples: dict[int, float], since: float) -> list[float]:
    sent = {k: t for k, t in samples.items() if t >= since}
    return [at - sent[sample] for i in range(n) for sample, at in sample_commits(root, i) if sample in sent]


def commit_aligned_tps(root: Path, n: int, since: float, until: float, txs_per_sample: int) -> float | None:
    """Committed tx/s measured between commits instead of between the window's edges: per worker, the sample
    transactions of its clients committed after its first commit in the window up to its last (a commit writes
    one time for all its samples), times the transactions each sample stands for, over the time between those two
    commits; summed over the workers. The window's own figure moves with where its edges fall in the anchors'
    commits (one is ~100,000 txs at 300,000 tx/s: ~10,000 tx/s of a 10 s window); this one does not."""
    total = 0.0
    for i in range(n):
        times = sorted(at for _, at in sample_commits(root, i) if since <= at <= until)
        if not times or times[-1] - times[0] <= 0:
            return None
        first, last = times[0], times[-1]
        total += sum(1 for t in times if first < t <= last) * txs_per_sample / (last - first)
    return total


def committed_twice(root: Path, n: int) -> list[int]:
    """Per node, batch digests its log committed at more than one height (committed.log): must be 0. A worker's
    "duplicates" are batches it *received* again (a transfer wasted), which the log skips by digest."""
    out = []
    for i in range(n):
        log = root / "data" / f"bullshark-{i}" / "worker" / "committed.log"
        heights: dict[str, set[str]] = {}
        for line in log.read_text().splitlines() if log.exists() else ():
            height, digest = line.split()
            heights.setdefault(digest, set()).add(height)
        out.append(sum(1 for hs in heights.values() if len(hs) > 1))
    return out


def machine_cpu() -> list[int]:
    """/proc/stat's first line: user nice system idle iowait irq softirq steal (ticks of all CPUs)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def client_process(slots: list[int], ports: list[int], tx_size: int, rate: float, total: float, counters,
                   conn, sample_every: int = SAMPLE_EVERY_BLOCK) -> None:
    """Clients `slots` (rate tx/s each) in a process of their own: their event loop shares no time with the
    benchmark's metric scrapes and bookkeeping (in session 9 they ran in the benchmark's loop, and the window's
    sent figure stayed 1.5-2.7% under offered). Sent and blocked go to `counters` as they change; samples,
    acknowledged and sent counts come back over `conn` at the end."""
    clients = [Client(i, port, tx_size, sample_every) for i, port in zip(slots, ports, strict=True)]
    for c in clients:
        c.shared = (counters, c.index)
    conn.send("ready")
    conn.recv()  # go
    async def run_all() -> None:
        await asyncio.gather(*(c.run(rate, total) for c in clients))

    uvloop.run(run_all())  # 0.09-0.12 of a core at 300,000 offered (session 9), 0.14-0.17 on asyncio's loop
    conn.send({c.index: (c.samples, c.acked, c.sent, c.blocks) for c in clients})


def drive_clients(args: argparse.Namespace, rate: float, ports: list[int], cluster: LocalCluster,
                  nodes: dict[int, int], workers: dict[int, int], profile: bool) -> dict:
    """Run the clients (`--client-procs` processes) for warmup + duration; read the window's figures."""
    ctx = multiprocessing.get_context("spawn")
    counters = ctx.RawArray("d", 2 * args.nodes)
    groups = [list(range(k, args.nodes, args.client_procs)) for k in range(min(args.client_procs, args.nodes))]
    pipes, procs = [], {}
    for k, slots in enumerate(groups):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=client_process, daemon=True, args=(
            slots, [ports[i] for i in slots], args.tx_size, rate / args.nodes, args.warmup + args.duration,
            counters, theirs, args.sample_every))
        proc.start()
        pipes.append(mine)
        procs[k] = proc
    try:
        for conn in pipes:
            conn.recv()  # ready: imported, clients made
        for conn in pipes:
            conn.send("go")
        pids = {k: p.pid for k, p in procs.items()}

        def snapshot() -> tuple:
            # the clients' counters with the clock, then the scrapes (which no longer hold up the clients)
            now, counts = time.time(), list(counters)
            return (now, scrape(cluster.url(0)), cpu_seconds(nodes), cpu_seconds(workers), cpu_seconds(pids),
                    sum(counts[0::2]), scrape_all(cluster, args.nodes), sum(counts[1::2]), machine_cpu())

        time.sleep(args.warmup)
        before = snapshot()
        profiles = [PhaseProfile(nodes[0], args.duration * 0.8), PhaseProfile(workers[0], args.duration * 0.8)] \
            if profile and workers else []
        time.sleep(max(0.0, args.duration - (time.time() - before[0])))
        after = snapshot()
        done: dict = {}
        for conn in pipes:
            if conn.poll(args.duration + 30):
                done.update(conn.recv())
    finally:
        for proc in procs.values():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return {"before": before, "after": after, "profiles": [p.result() for p in profiles],
            "samples": {k: t for samples, _, _, _ in done.values() for k, t in samples.items()},
            "acked": sum(v[1] for v in done.values()), "sent": sum(v[2] for v in done.values()),
            "due": round(rate * (args.warmup + args.duration))}


def one_run(args: argparse.Namespace, rate: float, profile: bool) -> dict:
    root = Path(tempfile.mkdtemp(prefix="dwcp-bullshark-bench-"))
    try:
        return _run_in(root, args, rate, profile)
    finally:
        if args.keep:
            print(f"  cluster data kept in {root}", flush=True)
        else:  # every run stores each batch four times: 0.3-1 GB
            for link in root.glob("data/bullshark-*/worker"):
                if link.is_symlink():
                    shutil.rmtree(link.resolve(), ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)


def _run_in(root: Path, args: argparse.Namespace, rate: float, profile: bool) -> dict:
    settings = {"batch_size": args.batch_size, "max_batch_delay_ms": args.max_batch_delay_ms,
                "header_size": args.header_size, "max_header_delay_ms": args.max_header_delay_ms,
                "min_header_delay_ms": args.min_header_delay_ms, "busy_header_batches": args.busy_header_batches}
    if args.max_inflight:
        settings["max_inflight_batches"] = args.max_inflight
    if args.batch_dir:  # each worker's directory (batches.dat, committed.log) elsewhere, e.g. on a tmpfs
        for i in range(args.nodes):
            there = Path(tempfile.mkdtemp(prefix=f"bullshark-{i}-worker-", dir=args.batch_dir))
            (root / "data" / f"bullshark-{i}").mkdir(parents=True)
            (root / "data" / f"bullshark-{i}" / "worker").symlink_to(there)
    with LocalCluster(root, args.nodes, service="bullshark", settings=settings) as cluster:
        cluster.start_all()
        cluster.wait_ready(timeout=180)
        nodes = {i: p.pid for i, p in cluster.procs.items()}
        workers = worker_pids(nodes)
        ports = [cluster.extra_ports["worker"][i] for i in range(args.nodes)]
        got = drive_clients(args, rate, ports, cluster, nodes, workers, profile)
        time.sleep(2.0)
        # everything the clients sent (warmup included) against what node 0 committed by now, 3 s after the last
        # send: a cluster that keeps up commits ~all of it, whichever way the window's edges fall in the anchors'
        # commits (one is ~100,000 txs at 300,000 tx/s: a 10 s window's figure moves by ~10,000 tx/s with them)
        committed_total = metric(scrape(cluster.url(0)), "bullshark_transactions_committed_total")
        b, a = got["before"], got["after"]
        window = a[0] - b[0]

        def delta(name: str) -> float:
            return metric(a[1], name) - metric(b[1], name)

        txs = delta("bullshark_transactions_committed_total")
        lat_sum = delta("bullshark_consensus_latency_seconds_sum")
        lat_n = delta("bullshark_consensus_latency_seconds_count")
        e2e = sample_latencies(root, args.nodes, got["samples"], since=b[0])
        aligned = commit_aligned_tps(root, args.nodes, b[0], a[0], BLOCK_TXS * args.sample_every)
        primary_cpu, worker_cpu = sum(spent(b[2], a[2]).values()), sum(spent(b[3], a[3]).values())
        result = {
            "nodes": args.nodes, "workers": args.workers, "rate": rate, "tx_size": args.tx_size,
            "batch_size": args.batch_size, "duration_s": round(window, 2), "window_unix_s": [b[0], a[0]],
            "sent_tps": round((a[5] - b[5]) / window),
            "consensus_tps": round(txs / window), "consensus_bps": round(txs * args.tx_size / window),
            "consensus_latency_s": round(lat_sum / lat_n, 3) if lat_n else None,
            "consensus_tps_commit_aligned": round(aligned) if aligned else None,
            "e2e_tps": round(min(txs, a[5] - b[5]) / window),
            "e2e_latency_s": round(statistics.mean(e2e), 3) if e2e else None,
            "e2e_latency_p50_s": round(statistics.median(e2e), 3) if e2e else None,
            "e2e_latency_p99_s": round(sorted(e2e)[int(0.99 * (len(e2e) - 1))], 3) if e2e else None,
            "e2e_samples": len(e2e),
            "cpu_cores": {"primaries": round(primary_cpu / window, 2), "workers": round(worker_cpu / window, 2),
                          "clients": round(sum(spent(b[4], a[4]).values()) / window, 2)},
            "cpu_us_per_tx": {"primaries": round(1e6 * primary_cpu / txs, 2) if txs else None,
                              "workers": round(1e6 * worker_cpu / txs, 2) if txs else None},
            "acknowledged": got["acked"], "sent": got["sent"], "due": got["due"],
            "committed_total": round(committed_total),
            "committed_of_sent": round(committed_total / got["sent"], 4) if got["sent"] else None,
            "clients_blocked_share": round((a[7] - b[7]) / window / args.nodes, 3),  # mean share in drain()
            "per_worker": per_worker(b, a, window),
            "committed_twice": committed_twice(root, args.nodes),
            # the whole machine over the window, in cores: steal is CPU the hypervisor gave elsewhere
            "machine_cores": {k: round((y - x) / os.sysconf("SC_CLK_TCK") / window, 2) for k, x, y in zip(
                ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"), b[8], a[8], strict=True)},
        }
        if got["profiles"]:
            result["profile_primary"], result["profile_worker"] = got["profiles"]
    return result


def report(r: dict) -> str:
    lines = [
        f"offered {r['rate']:,.0f} tx/s ({r['sent_tps']:,} sent in the window, {r['sent'] / r['due']:.1%} of due "
        f"over the run; {r['committed_of_sent']:.1%} of all sent committed 3 s after the last): "
        f"consensus {r['consensus_tps']:,} tx/s (between commits {r['consensus_tps_commit_aligned'] or 0:,}) "
        f"({r['consensus_bps'] / 1e6:.1f} MB/s) at {r['consensus_latency_s']} s; end-to-end {r['e2e_tps']:,} tx/s "
        f"at {r['e2e_latency_s']} s (p50 {r['e2e_latency_p50_s']}, p99 {r['e2e_latency_p99_s']}, "
        f"{r['e2e_samples']} samples)",
        f"  CPU cores: primaries {r['cpu_cores']['primaries']}, workers {r['cpu_cores']['workers']}, "
        f"clients {r['cpu_cores']['clients']}; per tx: {r['cpu_us_per_tx']}; clients blocked in drain "
        f"{r['clients_blocked_share']:.0%} of the window; batches committed twice per node "
        f"{r['committed_twice']}",
        "  machine (cores): " + ", ".join(f"{k} {v}" for k, v in r["machine_cores"].items()),
        f"  Narwhal local (4 nodes, 50,000 tx/s in): consensus {NARWHAL_LOCAL['consensus_tps']:,} tx/s at "
        f"{NARWHAL_LOCAL['consensus_latency_s']} s, e2e {NARWHAL_LOCAL['e2e_tps']:,} tx/s at "
        f"{NARWHAL_LOCAL['e2e_latency_s']} s; seed: >300,000 tx/s",
    ]
    for i, w in (r.get("per_worker") or {}).items():
        lines.append(f"  worker {i}: {w['cores']} cores; batches sealed {w['sealed']}, stored {w['stored']}, "
                     f"skipped {w['skipped']}, requested {w['requested']}, served {w['served']}, "
                     f"duplicates {w['duplicates']}; clients paused {w['paused_share']:.0%} of the window, "
                     f"seal -> quorum {w['quorum_wait_ms']} ms")
    for role in ("primary", "worker"):
        if r.get(f"profile_{role}"):
            lines.append(f"  where node 0's {role} CPU goes: {format_phases(r[f'profile_{role}'])}")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("consensus_latency_s", "consensus"), ("e2e_latency_s", "end-to-end")):
        pts = [(r["consensus_tps"], r[key]) for r in results if r[key] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel("committed tx/s")
    ax.set_ylabel("latency (s)")
    ax.set_title(f"Bullshark, {results[0]['nodes']} nodes on loopback, {results[0]['tx_size']} B tx")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` etc.: stop the cluster on the way out
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1, help="workers per node (this version runs one)")
    ap.add_argument("--rate", type=float, default=50_000, help="offered tx/s, all clients together")
    ap.add_argument("--rates", default="", help="comma-separated rates: a sweep, for --png")
    ap.add_argument("--tx-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=500_000)
    ap.add_argument("--max-batch-delay-ms", type=float, default=100.0)
    ap.add_argument("--header-size", type=int, default=1000)
    ap.add_argument("--max-header-delay-ms", type=float, default=200.0, help="the node's default (settings.py)")
    ap.add_argument("--min-header-delay-ms", type=float, default=100.0,
                    help="adaptive header delay: a header with fewer than --busy-header-batches batches goes out "
                    "after this long (0: every header waits --max-header-delay-ms); the node's default")
    ap.add_argument("--busy-header-batches", type=int, default=4, help="the node's default (settings.py)")
    ap.add_argument("--max-inflight", type=int, default=0,
                    help="max_inflight_batches per worker (0: the node's default)")
    ap.add_argument("--client-procs", type=int, default=1,
                    help="processes the clients run in (split evenly; at most one per node)")
    ap.add_argument("--sample-every", type=int, default=SAMPLE_EVERY_BLOCK,
                    help=f"a sample transaction every this many blocks of {BLOCK_TXS} (1: more samples at light load)")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--profile", action="store_true", help="py-spy one primary and one worker")
    ap.add_argument("--keep", action="store_true", help="keep the cluster's data directory (logs, batch stores)")
    ap.add_argument("--batch-dir", type=Path, help="put the workers' directories (batch stores) here, e.g. "
                    "/dev/shm: the nodes' logs stay with the rest (fsync'd)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--png", type=Path)
    args = ap.parse_args()
    if args.workers != 1:
        ap.error("this version runs one worker per node (--workers 1)")
    if args.tx_size < 9:
        ap.error("--tx-size must be at least 9 bytes (a sample carries an 8-byte id)")
    rates = [float(r) for r in args.rates.split(",") if r] or [args.rate]
    results = []
    for k, rate in enumerate(rates):
        result = one_run(args, rate, profile=args.profile and k == len(rates) - 1)
        print(report(result), flush=True)
        results.append(result)
    if args.png:
        plot(results, args.png)
    if args.json:
        doc = results[0] if len(results) == 1 else {"runs": results}
        args.json.write_text(json.dumps({**doc, "narwhal_local": NARWHAL_LOCAL}, indent=2) + "\n")


if __name__ == "__main__":
    main()
