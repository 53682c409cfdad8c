"""Labelled chunks larger than the small-chunk model's data, for its large-chunk part (`model.LargeChunks`).

A 1 MiB chunk costs seconds of oracle time (brotli-11 and zstd-19 run at 1-5 MB/s), so these sets are
labelled one payload per file in a directory: resumable after a stop, and shared by several workers (each
claims a payload with an exclusive `.claim` file before labelling it). Payloads are taken in a fixed random
order, so a set stopped early still spreads over its kinds and sizes (every fourth payload of a set whose
families come round-robin in twelves hit only three of them). The directory's
`calibration.json` is the calibration its labels are relative to.

Sets (payloads regenerated deterministically from their seeds; only chunks above `SPLIT_BYTES` are labelled):
- `train-real`: files of one kind concatenated, 512 KiB-1 MiB, from the training trees only
  (`corpus.TRAIN_REAL_ROOTS`), `train-synthetic`: corpus families, 512 KiB-1 MiB; both with the smaller
  client samples of `train.sample_variants`.
- `heldout-real`, `heldout-synthetic`: the payloads above 512 KiB of the held-out sets `dwcp compression
  evaluate` scores (`train.heldout_payloads`, seeds 3 and 2): the only requests whose answer the large-chunk
  part can change.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from dwcp.compression import calibrate as cal_mod
from dwcp.compression import corpus
from dwcp.compression.calibrate import Calibration
from dwcp.compression.costmodel import DEFAULT_CHUNK_BYTES
from dwcp.compression.train import Dataset, heldout_payloads, label

SPLIT_BYTES = 512 << 10  # the shipped MLP's largest training chunk (mlp-bc45da71d8: payloads up to 512 KiB)

Payloads = Callable[[], list[tuple[str, bytes]]]
# name -> (payload maker, whether rows include the smaller client samples)
SETS: dict[str, tuple[Payloads, bool]] = {
    "train-real": (lambda: list(corpus.real_payloads(40, 240, SPLIT_BYTES + 1, DEFAULT_CHUNK_BYTES,
                                                     corpus.TRAIN_REAL_ROOTS)), True),
    "train-synthetic": (lambda: list(corpus.items(41, 240, SPLIT_BYTES + 1, DEFAULT_CHUNK_BYTES)), True),
    "heldout-real": (lambda: heldout_payloads(corpus.real_payloads, 3, 90), False),
    "heldout-synthetic": (lambda: heldout_payloads(corpus.items, 2, 180), False),
}


def calibration(directory: Path) -> Calibration:
    """The directory's calibration, run and stored first when missing (its labels are relative to it)."""
    path = directory / "calibration.json"
    if path.exists():
        return cal_mod.load(path)
    directory.mkdir(parents=True, exist_ok=True)
    cal = cal_mod.run()
    cal_mod.save(cal, path)
    return cal


def _jobs(name: str) -> Iterator[tuple[int, tuple[str, bytes], bool]]:
    make, augment = SETS[name]
    payloads = make()
    above = [i for i, (_, data) in enumerate(payloads) if len(data) > SPLIT_BYTES]
    for j in np.random.default_rng(0).permutation(len(above)):
        yield above[j], payloads[above[j]], augment


def _claim(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def label_sets(directory: Path, names: list[str], on_done: Callable[[str], None] | None = None,
               deadline: float = float("inf")) -> int:
    """Label the named sets' unlabelled, unclaimed payloads into `directory`, the sets in turns, until all are
    claimed or `deadline` (time.time()) passes; returns how many this call labelled."""
    calibration(directory)
    queues, done = [(name, _jobs(name)) for name in names], 0
    while queues and time.time() < deadline:
        for entry in list(queues):
            name, jobs = entry
            job = next(jobs, None)
            if job is None:
                queues.remove(entry)
                continue
            i, payload, augment = job
            path = directory / f"{name}-{i:04d}.npz"
            if path.exists() or not _claim(path.with_suffix(".claim")):
                continue
            start = time.thread_time()
            ds = label([payload], augment=augment)
            ds.item[:] = i  # the payload's index in its whole (regenerated) set
            ds.save(path)
            done += 1
            if on_done is not None:
                on_done(f"{path.name}: {payload[0]}, {len(payload[1])} B, {time.thread_time() - start:.1f} s CPU")
    return done


def load_set(directory: Path, name: str) -> Dataset | None:
    """Every labelled payload of set `name` in `directory`, in index order (None when there is none)."""
    paths = sorted(directory.glob(f"{name}-[0-9][0-9][0-9][0-9].npz"))
    if not paths:
        return None
    parts = [Dataset.load(p) for p in paths]
    ds = Dataset.concat(*parts)
    ds.item = np.concatenate([p.item for p in parts])  # keep the indices in the whole set
    return ds
