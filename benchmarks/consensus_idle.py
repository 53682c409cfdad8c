"""What an idle consensus node costs: CPU and wake-ups per second per node with no load (issue 12).

Starts an n-node cluster of `dwcp serve tpbft` processes on loopback (`--protocol` picks the core), commits
a few transactions so every link is up, waits, then reads over `--seconds` each node's user + system CPU
(with its threads, from /proc) and its threads' voluntary context switches (each one a wake-up from a
sleep: a timer, a peer's frame, the commit writer). Periodic work shows here undiluted: the sync gossip and
the status frames of the peers, uvicorn's tick, the event-loop lag sampler, status reports.

    PYTHONPATH=src .venv/bin/python benchmarks/consensus_idle.py
    PYTHONPATH=src .venv/bin/python benchmarks/consensus_idle.py --nodes 4 --seconds 20 --json out.json

Measured 2026-12-05 08:00 UTC (issue 12, session 6) on the shared 2-CPU VM through /work/notes/bench, two runs
each, interleaved: main c4e60ba 7.0 / 6.2 ms CPU per second per node, 46.6 / 47.8 wake-ups per second; with
the loop-lag sampler at 250 ms instead of 50 ms (and issue 12's other small cuts) 4.2 / 5.0 ms, 32.7 / 33.2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _harness import cpu_seconds
from tpbft_cluster import node_pids, offer, settle

from dwcp.consensus.node.cluster import LocalCluster


def wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of `pid` so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
        except OSError:  # a thread that ended meanwhile
            continue
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--protocol", default="tpbft")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dwcp-bench-idle-"))
    with LocalCluster(root, args.nodes, service="tpbft", settings={"protocol": args.protocol}) as cluster:
        cluster.start_all()
        cluster.wait_ready(timeout=120)
        offer(cluster, 100.0, 2.0, 10.0)  # every link up, caches warm
        settle(cluster)
        time.sleep(2.0)
        pids = node_pids(cluster)
        cpu0, wake0, t0 = cpu_seconds(pids), {k: wakeups(p) for k, p in pids.items()}, time.monotonic()
        time.sleep(args.seconds)
        cpu1, wake1, dt = cpu_seconds(pids), {k: wakeups(p) for k, p in pids.items()}, time.monotonic() - t0
    cpu = {k: (cpu1[k] - cpu0[k]) / dt * 1000 for k in pids if k in cpu0 and k in cpu1}
    wake = {k: (wake1[k] - wake0[k]) / dt for k in pids}
    result = {"nodes": args.nodes, "protocol": args.protocol, "seconds": dt, "load_average_at_end": os.getloadavg()[0],
              "cpu_ms_per_s": statistics.fmean(cpu.values()), "cpu_ms_per_s_by_node": cpu,
              "wakeups_per_s": statistics.fmean(wake.values()), "wakeups_per_s_by_node": wake}
    print(f"idle {args.protocol}, {args.nodes} nodes, {dt:.1f} s: {result['cpu_ms_per_s']:.2f} ms CPU per second "
          f"per node (min {min(cpu.values()):.2f}, max {max(cpu.values()):.2f}; /proc counts 10 ms ticks), "
          f"{result['wakeups_per_s']:.1f} wake-ups per second per node")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
