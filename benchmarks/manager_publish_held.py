"""CPU per small object of a receiver's `ObjectStore.publish_held` (the store side of a batch's COMMIT_MANY).

`--objects` random objects of `--bytes` each are published in batches of `--batch` (128: a batch's objects), into
a fresh store on the data disk; printed: the calling thread's CPU per object (blob files written and renamed,
their landing rows, the index transaction) and the wall time per batch (its WAL fsync). For an A/B, run it with
PYTHONPATH pointing at each tree, alternately, under /work/notes/bench.

    PYTHONPATH=src .venv/bin/python benchmarks/manager_publish_held.py --objects 4000 --out publish_held.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from dwcp.manager.store import ObjectStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=4000)
    ap.add_argument("--bytes", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--keys", type=int, default=0, help="objects go to this many keys in turn (each a new version "
                    "of one, which the retention rule prunes past keep_versions); default: a key per object")
    ap.add_argument("--dir", type=Path, default=None, help="where the store goes (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=Path("manager_publish_held.json"))
    args = ap.parse_args()
    bodies = [os.urandom(args.bytes) for _ in range(args.objects)]
    items = [(f"k{i % args.keys if args.keys else i}", body, hashlib.sha256(body).hexdigest())
             for i, body in enumerate(bodies)]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = ObjectStore(Path(tmp) / "objects")
        cpu0, wall0, proc0 = time.thread_time(), time.perf_counter(), time.process_time()
        for start in range(0, len(items), args.batch):
            store.publish_held(items[start:start + args.batch])
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        store.close()  # its checkpoint thread's last round (and, since session 16, collection): process CPU
        proc = time.process_time() - proc0
    batches = -(-args.objects // args.batch)
    out = {"objects": args.objects, "bytes": args.bytes, "batch": args.batch, "keys": args.keys,
           "cpu_us_per_object": round(cpu / args.objects * 1e6, 2),
           "process_cpu_us_per_object": round(proc / args.objects * 1e6, 2),
           "wall_ms_per_batch": round(wall / batches * 1e3, 2),
           "store_file": sys.modules[ObjectStore.__module__].__file__,
           "load_average": os.getloadavg()[0]}
    print(f"publish_held: {out['cpu_us_per_object']} CPU us per object ({out['process_cpu_us_per_object']} with the "
          f"store's threads), {out['wall_ms_per_batch']} ms per batch of "
          f"{args.batch}; load average {out['load_average']:.1f}")
    args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
