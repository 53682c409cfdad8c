"""A bounded stand-in for `dwcp up`'s neighbours of a cluster on this 2-core VM: bursty CPU and small fsyncs.

`--cpu-procs` processes each wake at random (exponential gaps) and burn CPU in short bursts, together about
`--cores` cores (~0.7 measured at 1.0 beside a 10-node cluster); `--disk-procs` processes each append a
`--record`-byte record and fdatasync it `--fsync-hz` times a second (the other consensus nodes' logs); one
process writes `--bulk-mb` MB buffered every `--bulk-every` s, then fsyncs (a TSDB or batch-store flush).
Everything stops after `--seconds`; its files live in a temporary directory under `--dir` and are removed.
Used beside `tpbft_cluster.py` for T-PBFT's p99 at `dwcp up`'s light load (docs/tpbft.md, "Session 8"):

    .venv/bin/python benchmarks/neighbour_load.py --seconds 75 --cores 1.0 &
    sleep 2; .venv/bin/python benchmarks/tpbft_cluster.py --rate 7.4 --poisson 1 --duration 60 --no-ramp --stages
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from multiprocessing import Process


def cpu(seconds: float, duty: float, burst: float) -> None:
    end = time.monotonic() + seconds
    gap = burst / duty - burst
    while time.monotonic() < end:
        time.sleep(random.expovariate(1 / gap))
        until = time.monotonic() + random.uniform(0.5, 1.5) * burst
        while time.monotonic() < until:
            pass


def disk(seconds: float, directory: str, hz: float, size: int) -> None:
    end = time.monotonic() + seconds
    fd = os.open(os.path.join(directory, f"log-{os.getpid()}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    record = os.urandom(size)
    try:
        while time.monotonic() < end:
            time.sleep(random.expovariate(hz))
            os.write(fd, record)
            os.fdatasync(fd)
    finally:
        os.close(fd)


def bulk(seconds: float, directory: str, mb: int, every: float) -> None:
    end = time.monotonic() + seconds
    chunk = os.urandom(1 << 20)
    i = 0
    while time.monotonic() < end:
        time.sleep(every)
        with open(os.path.join(directory, f"bulk-{i % 3}"), "wb") as f:
            for _ in range(mb):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        i += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--cpu-procs", type=int, default=12)
    ap.add_argument("--cores", type=float, default=0.8, help="CPU asked of the bursty processes together")
    ap.add_argument("--burst-ms", type=float, default=3.0)
    ap.add_argument("--disk-procs", type=int, default=10)
    ap.add_argument("--fsync-hz", type=float, default=8.0)
    ap.add_argument("--record", type=int, default=4096)
    ap.add_argument("--bulk-mb", type=int, default=16)
    ap.add_argument("--bulk-every", type=float, default=5.0)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    directory = tempfile.mkdtemp(prefix="dwcp-neighbours-", dir=args.dir)
    duty = args.cores / max(args.cpu_procs, 1)
    procs = [Process(target=cpu, args=(args.seconds, duty, args.burst_ms / 1e3)) for _ in range(args.cpu_procs)]
    procs += [Process(target=disk, args=(args.seconds, directory, args.fsync_hz, args.record))
              for _ in range(args.disk_procs)]
    if args.bulk_mb:
        procs.append(Process(target=bulk, args=(args.seconds, directory, args.bulk_mb, args.bulk_every)))
    before = os.times()
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    after = os.times()
    used = after.children_user + after.children_system - before.children_user - before.children_system
    print(f"neighbour_load: {len(procs)} processes, {used:.1f} s CPU over {args.seconds:.0f} s "
          f"({used / args.seconds:.2f} cores)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
