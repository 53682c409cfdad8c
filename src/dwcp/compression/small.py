"""Labelled small payloads (<= 64 KiB, each measured whole: one chunk), for the small-chunk part
(`model.SmallChunks`), measured on the host the artifact will serve on.

Why a set of its own: on dwcp up's request mix the shadow scores a 1-8 KiB sample standing for a payload of
hundreds of MB as that payload sent in chunks of the sample's size, so small-chunk speeds decide its picks,
and the MLP's small-chunk speeds were 1.1-1.35x too fast on this host for lz4 and brotli-1 (session 8).
A small payload costs tens of ms of oracle time, so the four sets below label in a few CPU-minutes.

Sets (payloads regenerated deterministically from their seeds): `train-small-synthetic` (corpus families,
256 B-64 KiB) and `train-small-real` (files from the training trees only, `corpus.TRAIN_REAL_ROOTS`);
`heldout-small-synthetic` and `heldout-small-real`: the <= 64 KiB thirds of the held-out sets
(`train.heldout_payloads`, seeds 2 and 3). The directory's `calibration.json` is the calibration the labels
are relative to (`large.calibration`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dwcp.compression import corpus
from dwcp.compression.train import Dataset, label, refeature

SMALL_BYTES = 64 << 10  # the largest labelled payload, and the largest chunk the part corrects

SETS: dict[str, Callable[[], list[tuple[str, bytes]]]] = {
    "train-small-synthetic": lambda: list(corpus.items(61, 360, 256, SMALL_BYTES)),
    "train-small-real": lambda: list(corpus.real_payloads(60, 180, 256, SMALL_BYTES, corpus.TRAIN_REAL_ROOTS)),
    "heldout-small-synthetic": lambda: list(corpus.items(2, 60, 1024, SMALL_BYTES)),
    "heldout-small-real": lambda: list(corpus.real_payloads(3, 30, 1024, SMALL_BYTES)),
}


def label_sets(directory: Path, names: list[str], on_done: Callable[[str], None] | None = None) -> None:
    """Label each named set into `directory/<name>.npz` (whole sets: each takes CPU-seconds to minutes)."""
    from dwcp.compression import large

    large.calibration(directory)  # the labels' reference: run and stored first when missing
    for name in names:
        data = label(SETS[name]())
        data.save(directory / f"{name}.npz")
        if on_done is not None:
            on_done(f"{name}: {data.payloads} payloads")


def load_set(directory: Path, name: str) -> Dataset | None:
    path = directory / f"{name}.npz"
    return Dataset.load(path) if path.exists() else None


def whole_sample_set(directory: Path, name: str) -> Dataset | None:
    """Set `name` with its features read as a whole-sample small-chunk part reads them (`Extractor.whole_up_to` =
    SMALL_BYTES: every payload here is its own sample and chunk), from the regenerated payloads; labels as stored."""
    data = load_set(directory, name)
    return None if data is None else refeature(data, SETS[name](), whole_up_to=SMALL_BYTES)
