"""What a PUT of a small object costs the manager that stores it: CPU ms, fsync calls, wall time each.

One manager pair on loopback (manager_transfer.Managers); `--count` PUTs of `--bytes` random bytes to
manager-0 over one keep-alive connection, one after another. Pass 1 is timed: manager-0's CPU seconds
from /proc and the wall time per PUT. Pass 2 (other keys) runs with `strace -f -c` attached to manager-0
to count its fsync/fdatasync calls, the file system's cost of durability (strace slows every syscall, so
pass 2 is not timed). The object store's checkpoint thread runs in both: what it syncs later counts.

    .venv/bin/python benchmarks/manager_small_put.py --count 1000 --bytes 4096 --out runs/small_put.json

`--keys N` PUTs to N keys in turn (each PUT a new version of one), the case the store's retention rule
(`keep_versions`) prunes on: session 16 compared it against main's store, which keeps every version.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from _harness import cpu_seconds
from manager_transfer import Managers


def put_all(m: Managers, tag: str, bodies: list[bytes], keys: int = 0) -> float:
    """PUT each body to a key of its own, or with `keys`, to `keys` keys in turn (each a new version of one)."""
    t0 = time.perf_counter()
    for i, body in enumerate(bodies):
        resp = m.request(m.url(0), "PUT", f"/v1/objects/{tag}/{i % keys if keys else i:06d}", content=body)
        assert resp.status_code == 200, resp.text
    return time.perf_counter() - t0


def fsyncs_during(pid: int, work: Path, run) -> dict[str, int]:
    """Run `run()` with strace counting manager-0's sync calls (all threads); {} without strace."""
    if shutil.which("strace") is None:
        return {}
    out = work / "strace.txt"
    tracer = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=fsync,fdatasync,sync_file_range,syncfs",
                               "-o", str(out), "-p", str(pid)], stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached to every thread
    run()
    time.sleep(1.5)  # a checkpoint round (1 s) after the last PUT
    tracer.send_signal(signal.SIGINT)
    tracer.wait(30)
    counts = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync", "sync_file_range", "syncfs"):
            counts[parts[-1]] = int(parts[3])
    return counts


def store_gauges(m: Managers) -> dict[str, float]:
    """manager-0's dwcp_store_* gauges after every pass (none from a store without them: before session 16)."""
    text = m.request(m.url(0), "GET", "/metrics").text
    return {name: float(value) for name, value in (line.split() for line in text.splitlines()
            if line.startswith(("dwcp_store_versions ", "dwcp_store_blobs ", "dwcp_store_bytes ")))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--bytes", type=int, default=4096)
    ap.add_argument("--keys", type=int, default=0, help="PUT to this many keys in turn, each PUT past the first "
                    "`keys` a new version of one (the store's retention rule prunes one version per PUT once a "
                    "key holds keep_versions); default: every PUT a key of its own")
    ap.add_argument("--out", type=Path, default=Path("manager_small_put.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dwcp-small-put-"))
    m = Managers(work, ("127.0.0.1", "127.0.0.1"), None, selector=False)
    try:
        m.start()
        pid = m.procs["manager-0"].pid
        bodies = [os.urandom(args.bytes) for _ in range(args.count)]
        put_all(m, "warm", bodies[:50])
        time.sleep(1.5)
        before = cpu_seconds({"m0": pid})["m0"]
        wall = put_all(m, "timed", bodies, args.keys)
        time.sleep(1.5)  # the checkpoint's share
        cpu = cpu_seconds({"m0": pid})["m0"] - before
        syncs = fsyncs_during(pid, work, lambda: put_all(m, "traced", [b[::-1] for b in bodies], args.keys))
        store = store_gauges(m)
    finally:
        m.stop()
    result = {"count": args.count, "bytes": args.bytes, "keys": args.keys,
              "cpu_ms_per_put": round(cpu / args.count * 1e3, 3),
              "wall_ms_per_put": round(wall / args.count * 1e3, 3),
              "syncs_per_put": {k: round(v / args.count, 3) for k, v in syncs.items()},
              "load_average": round(os.getloadavg()[0], 1), "store": store}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{args.count} PUTs of {args.bytes} B: {result['cpu_ms_per_put']} CPU ms and {result['wall_ms_per_put']} "
          f"ms wall each (manager-0), sync calls each {result['syncs_per_put']}; load average "
          f"{result['load_average']}; store {store}", flush=True)


if __name__ == "__main__":
    main()
