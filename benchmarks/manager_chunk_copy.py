"""Thread CPU per 16 MiB chunk compressed from a file mapping and decoded from a receive buffer, with a `bytes`
copy first (the manager before session 13) and without (as `manager.chunks` does now): reps alternated, medians.

    PYTHONPATH=src .venv/bin/python benchmarks/manager_chunk_copy.py --reps 15
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import statistics
import tempfile
import time

from dwcp.compression.codecs import BY_KEY

CHUNK = 16 << 20


def text_like(size: int, seed: int = 5) -> bytes:
    """Words from a 3,000-word vocabulary: compressible like the benchmark's text family."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    return b" ".join(rng.choice(words) for _ in range(size // 5))[:size]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--codecs", default="lz4,zstd-1")
    args = ap.parse_args()
    fd, path = tempfile.mkstemp(dir="/var/tmp")
    try:
        os.write(fd, text_like(CHUNK))
        mapped = mmap.mmap(fd, CHUNK, prot=mmap.PROT_READ)
        view = memoryview(mapped)  # the sender's chunk: a view of the blob's mapping
        times: dict[tuple[str, str, str], list[float]] = {}
        for key in args.codecs.split(","):
            compress, decompress = BY_KEY[key].make()
            received = memoryview(bytearray(compress(view)))  # the receiver's chunk: a view of its buffer
            for _ in range(args.reps):
                for arm in ("copy", "direct"):
                    t0 = time.thread_time()
                    compress(bytes(view) if arm == "copy" else view)
                    t1 = time.thread_time()
                    decompress(bytes(received) if arm == "copy" else received)
                    t2 = time.thread_time()
                    times.setdefault((key, arm, "encode"), []).append(t1 - t0)
                    times.setdefault((key, arm, "decode"), []).append(t2 - t1)
            received.release()
        view.release()
        mapped.close()
        for (key, arm, step), v in sorted(times.items()):
            median, least = statistics.median(v) * 1e3, min(v) * 1e3
            print(f"{key:7s} {step:6s} {arm:6s} median {median:7.2f} ms  min {least:7.2f} ms")
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main()
