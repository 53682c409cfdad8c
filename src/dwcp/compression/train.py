"""Training pipeline: generate a corpus, label it with the oracle, fit the model, score it on held-out data.

Labels are data properties (per option: ratio, compress and decompress speed relative to the host's
calibration), measured once per payload; links are applied afterwards through the cost model, so one
labelled payload scores against any number of links at no extra measuring cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dwcp.compression import oracle
from dwcp.compression.calibrate import Calibration
from dwcp.compression.codecs import CODED, KEYS
from dwcp.compression.costmodel import Link, transfer_seconds
from dwcp.compression.features import FEATURE_NAMES, Extractor, make_sample
from dwcp.compression.model import Model, fit, merge

Progress = Callable[[int], None]


@dataclass
class Dataset:
    """Labelled rows: features x (N, F); measured ratio, vc, vd (N, options); size, family and payload index.

    A payload can give several rows (one per client sample shape, see `sample_variants`), all with the
    payload's labels; `item` says which payload a row came from. `pilot` is the host's pilot speed during
    the row's measurement (`oracle.Measurement.pilot`; NaN in sets labelled before the oracle had one):
    speeds are stored as measured, `at_speed` rescales them.
    """

    x: np.ndarray
    ratio: np.ndarray
    vc: np.ndarray
    vd: np.ndarray
    size: np.ndarray
    family: np.ndarray
    item: np.ndarray
    pilot: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.pilot is None:
            self.pilot = np.full(len(self.size), np.nan)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, x=self.x, ratio=self.ratio, vc=self.vc, vd=self.vd, size=self.size,
                            family=self.family.astype("U32"), item=self.item, pilot=self.pilot)

    @classmethod
    def load(cls, path: Path) -> Dataset:
        with np.load(path, allow_pickle=False) as z:
            item = z["item"] if "item" in z.files else np.arange(len(z["size"]))
            pilot = z["pilot"] if "pilot" in z.files else None
            return cls(z["x"], z["ratio"], z["vc"], z["vd"], z["size"], z["family"], item, pilot)

    def at_speed(self, pilot: float) -> Dataset:
        """The rows' speeds rescaled to a host running the pilot at `pilot` (see `Measurement.at_speed`)."""
        f = np.where(np.isfinite(self.pilot), pilot / self.pilot, 1.0) if np.isfinite(pilot) else np.ones(len(self))
        return Dataset(self.x, self.ratio, self.vc * f[:, None], self.vd * f[:, None], self.size, self.family,
                       self.item, np.where(np.isfinite(self.pilot), pilot, np.nan))

    def __len__(self) -> int:
        return len(self.size)

    @property
    def payloads(self) -> int:
        """Distinct payloads behind the rows (a payload gives one row per client sample shape)."""
        return len(np.unique(self.item))

    @classmethod
    def concat(cls, *parts: Dataset) -> Dataset:
        """One dataset of all rows; `item` numbers stay distinct (each part's follow the previous part's)."""
        items, offset = [], 0
        for p in parts:
            items.append(p.item + offset)
            offset += int(p.item.max()) + 1 if len(p) else 0
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("x", "ratio", "vc", "vd", "size")),
                   np.concatenate([p.family.astype("U32") for p in parts]), np.concatenate(items),
                   np.concatenate([p.pilot for p in parts]))

    def targets(self, cal: Calibration) -> np.ndarray:
        """Model outputs: log ratio, log(vc / reference vc), log(vd / reference vd) for the coded options,
        speeds rescaled to the host's speed when it was calibrated."""
        d = self.at_speed(cal.pilot)
        return np.hstack([np.log(d.ratio[:, 1:]), np.log(d.vc[:, 1:] / cal.vc[1:]), np.log(d.vd[:, 1:] / cal.vd[1:])])


def sample_variants(payload: bytes, augment: bool) -> list[bytes]:
    """The client samples a payload's rows are made from: the recommended one, plus (augment) smaller ones.

    Clients may send less than `make_sample`'s 64 KiB: a 4 KiB prefix, 16 KiB of spread slices, a 1 KiB
    prefix. Training on those too keeps the model inside its data when a small sample stands for a
    large payload (without them, `log2_size_over_sample` > 4 never occurs in training).
    """
    out = [make_sample(payload)]
    if augment:
        n = len(payload)
        out += [payload[:4096]] if n > 4096 else []
        out += [make_sample(payload, 16384, 4)] if n > 16384 else []
        out += [payload[:1024]] if n > 2048 else []
    return out


def _rows(extract: Extractor, payload: bytes, augment: bool) -> list[np.ndarray]:
    return [extract(s, len(payload)) for s in sample_variants(payload, augment)]


def label(payloads: Iterable[tuple[str, bytes]], progress: Progress | None = None,
          min_total: float = 0.002, augment: bool = False) -> Dataset:
    """Features from each payload's client sample(s); oracle measurements on the whole payload."""
    extract = Extractor()
    xs, ms, fams, items = [], [], [], []
    for i, (fam, data) in enumerate(payloads):
        rows = _rows(extract, data, augment)
        m = oracle.measure(data, min_total=min_total)
        xs += rows
        ms += [m] * len(rows)
        fams += [fam] * len(rows)
        items += [i] * len(rows)
        if progress:
            progress(len(data))
    return Dataset(np.array(xs), np.array([m.ratio for m in ms]), np.array([m.vc for m in ms]),
                   np.array([m.vd for m in ms]), np.array([m.size for m in ms]), np.array(fams), np.array(items),
                   np.array([m.pilot for m in ms]))


def refeature(data: Dataset, payloads: Iterable[tuple[str, bytes]], augment: bool = False) -> Dataset:
    """The same labels with features recomputed from the regenerated payloads (after a feature change)."""
    extract = Extractor()
    xs, src = [], []
    for i, (fam, payload) in enumerate(payloads):
        first = int(np.flatnonzero(data.item == i)[0])
        if len(payload) != data.size[first] or fam != data.family[first]:
            raise ValueError(f"regenerated payload {i} ({fam}, {len(payload)} B) is not the labelled one")
        rows = _rows(extract, payload, augment)
        xs += rows
        src += [first] * len(rows)
    idx = np.array(src)
    return Dataset(np.array(xs), data.ratio[idx], data.vc[idx], data.vd[idx], data.size[idx], data.family[idx],
                   data.item[idx], data.pilot[idx])


def random_links(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation grid: 1 Mbit/s-10 Gbit/s and 0.1-300 ms log-uniform, half the links lossy (1e-6..1e-2)."""
    bw = np.exp(rng.uniform(np.log(1.0), np.log(10_000.0), n))
    rtt = np.exp(rng.uniform(np.log(0.1), np.log(300.0), n))
    loss = np.where(rng.random(n) < 0.5, 0.0, np.exp(rng.uniform(np.log(1e-6), np.log(1e-2), n)))
    return bw, rtt, loss


def decision_weight(data: Dataset, links: int = 64, seed: int = 0, floor: float = 0.1) -> np.ndarray:
    """Per row, how much its labels can decide a choice: `floor` + the mean share of options that are
    *not* within the 5% tolerance of the best, over a fixed set of random links.

    A 300-byte payload is RTT-bound on every link (all options near-best, weight ~floor): its noisy speed
    labels should not pull the fit as hard as those of a 300 KiB one, where one option in three or four
    is the right answer.
    """
    bw, rtt, loss = random_links(np.random.default_rng(seed), links)
    b = bw[None, :, None] * 125_000.0
    r, p = rtt[None, :, None] / 1e3, loss[None, :, None]
    t = transfer_seconds(data.size[:, None, None], data.ratio[:, None, :], data.vc[:, None, :], data.vd[:, None, :],
                         b, r, p)
    near = t <= oracle.NEAR_BEST * t.min(axis=2, keepdims=True)
    return floor + (1.0 - near.mean(axis=2)).mean(axis=1)


def train(data: Dataset, cal: Calibration, *, epochs: int = 600, hidden: tuple[int, ...] = (128, 128), seed: int = 0,
          members: int = 1, weighted: bool = False, on_epoch=None) -> Model:
    """Fit `members` MLPs from different seeds and merge them into one (their mean; see `model.merge`).

    With `weighted`, rows count by `decision_weight` (payloads whose options are all near-best on every
    link weigh least). Off by default: on the development sets it moved near-best by +0.4 points
    (synthetic) and -0.6 (real files), i.e. not measurably (docs/compression.md).
    """
    y = data.targets(cal)
    k = len(CODED)
    # Ratios decide most choices, compress speeds the fast-link ones; decompression rarely binds.
    weights = np.concatenate([np.full(k, 2.0), np.full(k, 1.0), np.full(k, 0.5)])
    rows = decision_weight(data.at_speed(cal.pilot)) if weighted else None
    fitted = [fit(data.x, y, features=FEATURE_NAMES, options=tuple(o.key for o in CODED), hidden=hidden,
                  epochs=epochs, seed=seed + m, y_weight=weights, row_weight=rows, on_epoch=on_epoch)
              for m in range(members)]
    model = fitted[0] if members == 1 else merge(fitted)
    from dwcp.compression.calibrate import reference_sha256

    model.reference_sha256 = reference_sha256()
    return model


@dataclass
class Evaluation:
    overall: dict[str, float]
    decisive: dict[str, float]  # only requests where the options differ by more than the 5% tolerance
    families: dict[str, dict[str, float]]  # per family: accuracy and end-to-end time ratios vs fixed options


def evaluate(model: Model, cal: Calibration, data: Dataset, links_per_item: int = 20, seed: int = 1) -> Evaluation:
    """Score the selector against the oracle on every (payload, link) pair of a held-out dataset, its speeds
    rescaled to the host's calibrated speed (as the model's predictions are)."""
    from dwcp.compression.selector import Selector

    sel = Selector(model, cal)
    data = data.at_speed(cal.pilot)
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(len(data)), links_per_item)
    bw, rtt, loss = random_links(rng, len(rows))
    bw_bps, rtt_s = bw * 125_000.0, rtt / 1e3
    truth = np.vstack([
        oracle.times(oracle.Measurement(int(data.size[i]), data.ratio[i], data.vc[i], data.vd[i]), data.size[i],
                     Link(float(b), float(r), float(p)))
        for i, b, r, p in zip(rows, bw, rtt, loss, strict=True)
    ])
    chosen, _ = sel.choose_features(data.x[rows], data.size[rows], bw_bps, rtt_s, loss)
    decisive = truth.max(1) > oracle.NEAR_BEST * truth.min(1)
    families = {}
    fams = data.family[rows]
    picked = truth[np.arange(len(rows)), chosen]
    for fam in sorted(set(fams.tolist())):
        m = fams == fam
        total = picked[m].sum()
        fixed = {k: float(total / truth[m, j].sum()) for j, k in enumerate(KEYS)}
        best_fixed = max(fixed, key=fixed.get)  # the fixed option with the least total time
        families[fam] = {**oracle.score_many(chosen[m], truth[m]), "vs_zstd-3": fixed["zstd-3"],
                         "vs_none": fixed["none"], "best_fixed": best_fixed, "vs_best_fixed": fixed[best_fixed]}
    return Evaluation(oracle.score_many(chosen, truth), oracle.score_many(chosen[decisive], truth[decisive]), families)
