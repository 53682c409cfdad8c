"""A worker's CPU per received 500 KB batch, in one process: what a fresh buffer per batch costs.

The receive path as `dataplane.py` runs it, minus the socket and TLS: a `framing.FrameReader` filled in
16 KB pieces (one TLS record each; the copy stands in for the decrypt into the reader's buffer), then
`batch_digest` and `BatchStore.put` (page cache) of the payload. "reused" is the code as it is (one buffer
per reader, a peer's batch not cached); "fresh" is that path before session 6b: a new zero-filled
`bytearray` per frame, kept by the store's cache (64 batches). Each first with glibc's default malloc
settings, rounds interleaved, then with the worker's (`dataplane._keep_freed_memory`, which cannot be undone
in a process). Process CPU time (user + system) and minor page faults per batch, median of `--rounds`.

    PYTHONPATH=src .venv/bin/python benchmarks/bullshark_receive.py --json receive.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from dwcp.consensus.bullshark.worker import batch_digest
from dwcp.consensus.transport import dataplane
from dwcp.consensus.transport.batchstore import BatchStore
from dwcp.consensus.transport.framing import Channel, FrameReader, encode_frame

RECORD = 16 * 1024


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class FreshReader(FrameReader):
    """The reader before session 6b: each frame's payload in a new bytearray of its length."""

    def filled(self, n: int):
        got = super().filled(n)
        if got is not None:
            self._body = bytearray()
        return got


def receive(frames: list[bytes], batches: int, directory: Path, fresh: bool) -> tuple[float, float]:
    """CPU us and page faults per batch: read (FrameReader), hash, store."""
    path = directory / "batches.dat"
    store, reader = BatchStore(path), (FreshReader() if fresh else FrameReader())
    f0, t0 = faults(), time.process_time()
    for i in range(batches):
        frame, pos = frames[i % len(frames)], 0
        while pos < len(frame):
            view = reader.buffer()
            n = min(len(view), RECORD, len(frame) - pos)
            view[:n] = frame[pos:pos + n]
            pos += n
            got = reader.filled(n)
            if got is not None:
                data = got[1][1:]
                store.put(batch_digest(data), data, own=fresh)  # own: cached, as every batch was before
    cpu, flt = time.process_time() - t0, faults() - f0
    os.close(store.fd)
    path.unlink()
    return cpu / batches * 1e6, flt / batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-bytes", type=int, default=500_000)
    ap.add_argument("--batches", type=int, default=200, help="per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    # distinct batches (the store skips a digest it holds): each payload leads with its index
    frames = [encode_frame(Channel.DATA, b"\x01" + i.to_bytes(4, "big") + os.urandom(args.batch_bytes - 4))
              for i in range(args.batches)]
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for malloc in ("glibc_default", "worker_malloc"):
            if malloc == "worker_malloc":
                dataplane._keep_freed_memory()
            runs: dict[str, list] = {"reused": [], "fresh": []}
            for _ in range(args.rounds):
                for kind in runs:
                    runs[kind].append(receive(frames, args.batches, Path(tmp), fresh=kind == "fresh"))
            for kind, got in runs.items():
                out[f"{kind}_{malloc}"] = {"cpu_us_per_batch": round(statistics.median(c for c, _ in got), 1),
                                           "faults_per_batch": round(statistics.median(f for _, f in got), 1)}
    print(f"per {args.batch_bytes:,} B batch received (read, BLAKE3, store), process CPU us and page faults, "
          f"median of {args.rounds} rounds of {args.batches}:")
    for malloc in ("glibc_default", "worker_malloc"):
        r, f = out[f"reused_{malloc}"], out[f"fresh_{malloc}"]
        print(f"  {malloc.replace('_', ' ')}: reused buffer {r['cpu_us_per_batch']} us "
              f"({r['faults_per_batch']} faults), fresh bytearray {f['cpu_us_per_batch']} us "
              f"({f['faults_per_batch']} faults)")
    if args.json:
        args.json.write_text(json.dumps({"batch_bytes": args.batch_bytes, **out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
