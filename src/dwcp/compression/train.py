"""Training pipeline: generate a corpus, label it with the oracle, fit the model, score it on held-out data.

Labels are data properties (per option: ratio, compress and decompress speed relative to the host's
calibration) of one chunk: every labelled payload is measured whole, as one chunk of its length, so its
rows' chunk feature is that length. Payload sizes and links are applied afterwards through the cost
model, so one labelled chunk scores against any number of links and declared payload sizes (1 KiB to
64 GiB) at no extra measuring cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dwcp.compression import oracle
from dwcp.compression.calibrate import Calibration
from dwcp.compression.codecs import CODED, KEYS
from dwcp.compression.costmodel import DEFAULT_CHUNK_BYTES, bytes_per_second, transfer_seconds
from dwcp.compression.features import FEATURE_NAMES, Extractor, chunk_at_most, make_sample
from dwcp.compression.model import LargeChunks, Model, SmallChunks, anchor_ratios, fit, merge
from dwcp.compression.shiprule import Verdict, judge

Progress = Callable[[int], None]


@dataclass
class Dataset:
    """Labelled rows: features x (N, F); measured ratio, vc, vd (N, options); size, family and payload index.

    `size` is the bytes measured as one chunk (the labelled payload's length), the chunk the rows' features
    and labels are for.

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
        np.savez_compressed(
            path,
            x=self.x,
            ratio=self.ratio,
            vc=self.vc,
            vd=self.vd,
            size=self.size,
            family=self.family.astype("U32"),
            item=self.item,
            pilot=self.pilot,
        )

    @classmethod
    def load(cls, path: Path) -> Dataset:
        with np.load(path, allow_pickle=False) as z:
            item = z["item"] if "item" in z.files else np.arange(len(z["size"]))
            pilot = z["pilot"] if "pilot" in z.files else None
            return cls(z["x"], z["ratio"], z["vc"], z["vd"], z["size"], z["family"], item, pilot)

    def at_speed(self, pilot: float) -> Dataset:
        """The rows' speeds rescaled to a host running the pilot at `pilot` (see `Measurement.at_speed`)."""
        f = np.where(np.isfinite(self.pilot), pilot / self.pilot, 1.0) if np.isfinite(pilot) else np.ones(len(self))
        return Dataset(
            self.x,
            self.ratio,
            self.vc * f[:, None],
            self.vd * f[:, None],
            self.size,
            self.family,
            self.item,
            np.where(np.isfinite(self.pilot), pilot, np.nan),
        )

    def __len__(self) -> int:
        return len(self.size)

    def take(self, rows: np.ndarray) -> Dataset:
        """The rows selected by `rows` (a boolean mask or indices), payload indices kept."""
        return Dataset(
            self.x[rows],
            self.ratio[rows],
            self.vc[rows],
            self.vd[rows],
            self.size[rows],
            self.family[rows],
            self.item[rows],
            self.pilot[rows],
        )

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
        return cls(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("x", "ratio", "vc", "vd", "size")),
            np.concatenate([p.family.astype("U32") for p in parts]),
            np.concatenate(items),
            np.concatenate([p.pilot for p in parts]),
        )

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


def label(
    payloads: Iterable[tuple[str, bytes]],
    progress: Progress | None = None,
    min_total: float = 0.002,
    augment: bool = False,
) -> Dataset:
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
    return Dataset(
        np.array(xs),
        np.array([m.ratio for m in ms]),
        np.array([m.vc for m in ms]),
        np.array([m.vd for m in ms]),
        np.array([m.size for m in ms]),
        np.array(fams),
        np.array(items),
        np.array([m.pilot for m in ms]),
    )


def refeature(
    data: Dataset, payloads: Iterable[tuple[str, bytes]], augment: bool = False, whole_up_to: int = 0
) -> Dataset:
    """The same labels with features recomputed from the regenerated payloads (after a feature change; with
    `whole_up_to`, as `Extractor(whole_up_to)` reads them)."""
    extract = Extractor(whole_up_to)
    xs, src = [], []
    for i, (fam, payload) in enumerate(payloads):
        first = int(np.flatnonzero(data.item == i)[0])
        if len(payload) != data.size[first] or fam != data.family[first]:
            raise ValueError(f"regenerated payload {i} ({fam}, {len(payload)} B) is not the labelled one")
        rows = _rows(extract, payload, augment)
        xs += rows
        src += [first] * len(rows)
    idx = np.array(src)
    return Dataset(
        np.array(xs),
        data.ratio[idx],
        data.vc[idx],
        data.vd[idx],
        data.size[idx],
        data.family[idx],
        data.item[idx],
        data.pilot[idx],
    )


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
    b = bytes_per_second(bw[None, :, None])
    r, p = rtt[None, :, None] / 1e3, loss[None, :, None]
    size = data.size[:, None, None]
    t = transfer_seconds(size, size, data.ratio[:, None, :], data.vc[:, None, :], data.vd[:, None, :], b, r, p)
    near = t <= oracle.NEAR_BEST * t.min(axis=2, keepdims=True)
    return floor + (1.0 - near.mean(axis=2)).mean(axis=1)


def train(
    data: Dataset,
    cal: Calibration,
    *,
    epochs: int = 600,
    hidden: tuple[int, ...] = (128, 128),
    seed: int = 0,
    members: int = 1,
    weighted: bool = False,
    on_epoch=None,
) -> Model:
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
    fitted = [
        fit(
            data.x,
            y,
            features=FEATURE_NAMES,
            options=tuple(o.key for o in CODED),
            hidden=hidden,
            epochs=epochs,
            seed=seed + m,
            y_weight=weights,
            row_weight=rows,
            on_epoch=on_epoch,
        )
        for m in range(members)
    ]
    model = fitted[0] if members == 1 else merge(fitted)
    from dwcp.compression.calibrate import reference_sha256

    model.reference_sha256 = reference_sha256()
    return model


def train_large_chunks(
    base: Model,
    data: Dataset,
    cal: Calibration,
    *,
    above_bytes: int,
    ridge: float | np.ndarray = 0.1,
    apply_above_bytes: float | None = None,
    shape: tuple[int, ...] = (),
) -> Model:
    """`base` with a large-chunk part (`model.LargeChunks`) fitted on `data`'s rows of chunks above `above_bytes`:
    predictions for chunks up to `above_bytes` stay `base`'s bit for bit; larger ones are `base`'s answer at
    `above_bytes`, plus a ridge-regressed correction of its residuals on these rows for chunks above
    `apply_above_bytes` (default: `above_bytes`; see `choose_threshold`); `shape`: `LargeChunks.shape`."""
    import copy

    rows = data.size > above_bytes
    if not rows.any():
        raise ValueError(f"no labelled chunk above {above_bytes} bytes to fit the large-chunk part on")
    if apply_above_bytes is not None and apply_above_bytes < above_bytes:
        raise ValueError("the correction cannot apply below the MLP's largest chunk")
    above = math.log2(above_bytes)
    x = data.x[rows]
    residual = data.targets(cal)[rows] - np.hstack(base.predict(chunk_at_most(x, above)))
    model = copy.copy(base)
    part = LargeChunks.fit(above, x, residual, ridge, shape)
    if apply_above_bytes is not None and apply_above_bytes != above_bytes:
        part.apply_above = math.log2(apply_above_bytes)
    model.large, model.version, model._plan = part, "", None
    model.training = {
        **base.training,
        "max_chunk_bytes": int(data.size.max()),
        "large_chunks": {
            "above_bytes": above_bytes,
            "ridge": np.broadcast_to(np.asarray(ridge, float), (3 * len(base.options),)).tolist(),
            "payloads": int(len(np.unique(data.item[rows]))),
            "rows": int(rows.sum()),
            "base": base.version,
            "shape_features": [base.features[i] for i in shape],
            "apply_above_bytes": int(apply_above_bytes or above_bytes),
        },
    }
    return model


def ridge_for_kinds(model: Model, kinds: tuple[str, ...], penalty: float | np.ndarray) -> np.ndarray:
    """Per-output ridge penalties for a correcting part: `penalty` for the outputs of the given kinds
    (`log_ratio`, `log_vc_rel`, `log_vd_rel`), infinite (left uncorrected) for the others."""
    return np.where([name.split(":")[0] in kinds for name in model.outputs], penalty, math.inf)


def train_small_chunks(
    base: Model,
    data: Dataset,
    cal: Calibration,
    *,
    below_bytes: int,
    ridge: float | np.ndarray,
    shape: tuple[int, ...] = (),
    whole_sample: bool = False,
    anchor: int | None = None,
    anchor_option: int | None = None,
) -> Model:
    """`base` with a small-chunk part (`model.SmallChunks`) fitted on `data`'s rows of chunks up to `below_bytes`:
    their answers get a ridge-regressed correction of the residuals, on these rows, of `base` without any
    small-chunk part it has (which the new one replaces); every larger chunk's answer stays `base`'s bit for bit.
    `ridge` per output (an infinite one leaves that output uncorrected). `whole_sample`: `data.x` was extracted
    with `Extractor(whole_up_to=below_bytes)` (`refeature`), as the model will be served. `anchor` (a feature
    index, format /5): the part answers the ratios as residuals of that feature's log, fitted in the same fit as
    the speeds' corrections, instead of correcting the MLP's ratios; with `anchor_option` (an option index), of
    that feature's log plus the MLP's ratios relative to that option's (`SmallChunks.anchor_option`)."""
    import copy

    rows = data.size <= below_bytes
    if not rows.any():
        raise ValueError(f"no labelled chunk up to {below_bytes} bytes to fit the small-chunk part on")
    below = math.log2(below_bytes)
    model = copy.copy(base)
    model.small, model.version, model._plan = None, "", None  # a part `base` already has is replaced, not stacked
    x = data.x[rows]
    answer = np.hstack(model.predict(x))
    if anchor is not None:  # the ratios' residuals are the anchor's, not the MLP's
        anchor_ratios(answer, x, anchor, anchor_option)
    residual = data.targets(cal)[rows] - answer
    model.small = SmallChunks.fit(
        below, x, residual, ridge, shape=shape, whole_sample=whole_sample, anchor=anchor, anchor_option=anchor_option
    )
    model.training = {
        **base.training,
        "small_chunks": {
            "below_bytes": below_bytes,
            "ridge": np.broadcast_to(np.asarray(ridge, float), (3 * len(base.options),)).tolist(),
            "shape_features": [base.features[i] for i in shape],
            "whole_sample": whole_sample,
            "ratio_anchor": None if anchor is None else base.features[anchor],
            "ratio_anchor_option": None if anchor_option is None else base.options[anchor_option],
            "payloads": int(len(np.unique(data.item[rows]))),
            "rows": int(rows.sum()),
            "base": base.version,
        },
    }
    return model


def small_ridge_cv(
    base: Model,
    data: Dataset,
    cal: Calibration,
    penalties: list[float],
    kinds: tuple[str, ...],
    *,
    below_bytes: int,
    folds: int = 5,
    links_per_item: int = 100,
    seed: int = 0,
    shape: tuple[int, ...] = (),
    whole_sample: bool = False,
    anchor: int | None = None,
    anchor_option: int | None = None,
) -> dict[float, dict]:
    """Cross-validated decisions of the small-chunk part per ridge penalty (`math.inf`: the base), on folds of
    whole training payloads: `summary` figures of the picks on `requests` of the held-back payloads, pooled.
    `kinds`: the output kinds corrected (`log_ratio`, `log_vc_rel`, `log_vd_rel`). `whole_sample`: as
    `train_small_chunks` (the base, penalty inf, is then scored on those features too); `anchor` too."""
    fold = np.random.default_rng(seed).integers(folds, size=int(data.item.max()) + 1)[data.item]
    out = {}
    for r in [math.inf, *penalties]:
        ridge = ridge_for_kinds(base, kinds, r)
        chosen, truth = [], []
        for k in range(folds):
            model = (
                base
                if math.isinf(r)
                else train_small_chunks(
                    base,
                    data.take(fold != k),
                    cal,
                    below_bytes=below_bytes,
                    ridge=ridge,
                    shape=shape,
                    whole_sample=whole_sample,
                    anchor=anchor,
                    anchor_option=anchor_option,
                )
            )
            held, req, (pick,) = _picks((model,), cal, data.take(fold == k), links_per_item, seed + 1)
            chosen.append(pick)
            truth.append(req.truth(held.ratio, held.vc, held.vd))
        out[r] = summary(np.concatenate(chosen), np.concatenate(truth))
    return out


@dataclass
class ThresholdCV:
    """Cross-validated decisions of the large-chunk part on training chunks, per candidate threshold (bytes;
    `math.inf`: no correction, the base's answers): `summary` figures overall, per declared-size bucket and per
    family, pooled over folds of whole payloads."""

    overall: dict[float, dict]
    buckets: dict[float, dict[str, dict]]
    families: dict[float, dict[str, dict]]
    verdicts: dict[float, Verdict]  # the ship rule (`shiprule.judge`) against the base, per candidate threshold
    chosen: float  # the smallest threshold the ship rule passes on the folds; inf if none

    def holds(self, threshold: float) -> bool:
        """The ship rule on the training folds (`shiprule`): no bucket or family worse, overall a gain."""
        return self.verdicts[threshold].ships


def choose_threshold(
    base: Model,
    data: Dataset,
    cal: Calibration,
    thresholds: list[float],
    *,
    above_bytes: int,
    ridge: float | np.ndarray,
    folds: int = 5,
    links_per_item: int = 100,
    seed: int = 1,
    shape: tuple[int, ...] = (),
) -> ThresholdCV:
    """The chunk size above which the large-chunk correction is applied, chosen on training chunks only.

    Each fold of whole training payloads is answered by a part fitted on the other folds (`ridge` as chosen by
    `choose_ridge`), the correction applied only to chunks above each candidate threshold, and scored like a
    held-out set (`requests`: `links_per_item` links and declared sizes per payload, its recommended client
    sample only). Chosen: the smallest candidate whose pooled near-best is at least the uncorrected base's in
    every declared-size bucket and every family (the ship rule, on training data); none (inf) if no candidate
    holds. A correction fitted on 512 KiB-1 MiB chunks helps payloads of many chunks, whose pace is set by the
    compress speed, and can cost payloads of one or two chunks, where every stage counts and the MLP's own
    answer at 512 KiB was already near: a higher threshold leaves those alone.
    """
    from dwcp.compression.selector import Selector

    first = np.flatnonzero(np.r_[True, data.item[1:] != data.item[:-1]] & (data.size > above_bytes))
    payloads = data.item[first]
    folds = min(folds, len(payloads))
    if folds < 2:
        raise ValueError(f"{len(payloads)} labelled payload(s) above {above_bytes} bytes: too few to cross-validate")
    fold_of = np.random.default_rng(0).permutation(len(payloads)) % folds
    candidates = [*thresholds, math.inf]
    rescaled = data.at_speed(cal.pilot)
    req = requests(rescaled.size[first], links_per_item, seed)
    truth = req.truth(rescaled.ratio[first], rescaled.vc[first], rescaled.vd[first])
    chosen = {t: np.empty(len(req.row), int) for t in candidates}
    for f in range(folds):
        train_rows = ~np.isin(data.item, payloads[fold_of == f])
        fitted = train_large_chunks(base, data.take(train_rows), cal, above_bytes=above_bytes, ridge=ridge, shape=shape)
        test = fold_of[req.row] == f
        x = data.x[first][req.row[test]]
        args = (
            req.size[test],
            req.chunk[test],
            bytes_per_second(req.bandwidth_mbps[test]),
            req.rtt_ms[test] / 1e3,
            req.loss[test],
        )
        for t in candidates:
            model = base if math.isinf(t) else _with_threshold(fitted, max(t, above_bytes))
            chosen[t][test] = Selector(model, cal).choose_features(x, *args)[0]
    names, in_bucket = [name for _, name in BUCKETS], bucket_of(req.size)
    family = data.family[first][req.row]
    cv = ThresholdCV(
        {t: oracle.score_many(chosen[t], truth) for t in candidates},
        {t: grouped(chosen[t], truth, in_bucket, names) for t in candidates},
        {t: grouped(chosen[t], truth, family) for t in candidates},
        {t: ship_verdict(chosen[math.inf], chosen[t], [truth], req, family) for t in candidates},
        math.inf,
    )
    cv.chosen = next((t for t in thresholds if cv.holds(t)), math.inf)
    return cv


def ship_verdict(
    base: np.ndarray, candidate: np.ndarray, truths: list[np.ndarray], req: Requests, family: np.ndarray
) -> Verdict:
    """The ship rule (`shiprule.judge`) for two models' picks on `req`, per declared-size bucket and per family
    (`family`: per request), payloads as `req.row`; `truths` as `judge` takes them."""
    in_bucket = bucket_of(req.size)
    groups = {name: in_bucket == name for _, name in BUCKETS} | {f: family == f for f in np.unique(family).tolist()}
    return judge(base, candidate, truths, req.row, {g: m for g, m in groups.items() if m.any()})


def _with_threshold(model: Model, apply_above_bytes: float) -> Model:
    """`model` (with a large-chunk part) correcting only chunks above `apply_above_bytes`."""
    import copy

    out, part = copy.copy(model), copy.copy(model.large)
    part.apply_above = None if apply_above_bytes <= 2**part.above else math.log2(apply_above_bytes)
    out.large, out.version, out._plan = part, "", None
    return out


def choose_ridge(
    base: Model,
    data: Dataset,
    cal: Calibration,
    penalties: list[float],
    *,
    above_bytes: int,
    folds: int = 5,
    shape: tuple[int, ...] = (),
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Per output, the ridge penalty of the large-chunk part with the least cross-validated squared error on
    `data`'s rows above `above_bytes` (folds of whole payloads: a payload's sample variants share its labels),
    or infinity (no correction) where none beats the base MLP; and every penalty's per-output error (inf: none).

    Per output, because a few dozen labelled payloads can pin down how much slower zstd-19 runs on 1 MiB
    chunks than the MLP says at 512 KiB, but not a correction of every ratio: an output whose correction does
    not beat the MLP out of sample keeps the MLP's answer.
    """

    rows = np.flatnonzero(data.size > above_bytes)
    above = math.log2(above_bytes)
    x = data.x[rows]
    residual = data.targets(cal)[rows] - np.hstack(base.predict(chunk_at_most(x, above)))
    payloads = np.unique(data.item[rows])
    folds = min(folds, len(payloads))
    if folds < 2:
        raise ValueError(f"{len(payloads)} labelled payload(s) above {above_bytes} bytes: too few to cross-validate")
    fold_of = dict(
        zip(payloads.tolist(), (np.random.default_rng(0).permutation(len(payloads)) % folds).tolist(), strict=True)
    )
    row_fold = np.array([fold_of[i] for i in data.item[rows].tolist()])
    errors = {math.inf: np.mean(residual**2, axis=0)}
    for ridge in penalties:
        sq = np.empty_like(residual)
        for f in range(folds):
            test = row_fold == f
            part = LargeChunks.fit(above, x[~test], residual[~test], ridge, shape)
            sq[test] = (residual[test] - part.correction(x[test])) ** 2
        errors[ridge] = sq.mean(axis=0)
    options = list(errors)
    table = np.array([errors[r] for r in options])
    return np.array(options)[table.argmin(axis=0)], errors


def heldout_payloads(
    make: Callable[..., Iterable[tuple[str, bytes]]], seed: int, count: int
) -> list[tuple[str, bytes]]:
    """A held-out set at every scale, in thirds: whole payloads of 1-64 KiB, of 64 KiB-1 MiB, and full 1 MiB
    chunks (of payloads larger than a chunk). `make(seed, count, min_size, max_size)` is `corpus.items` or
    `corpus.real_payloads`."""
    third = count // 3
    return [
        *make(seed, third, 1024, 65536),
        *make(seed + 100, third, 65536, DEFAULT_CHUNK_BYTES),
        *make(seed + 200, count - 2 * third, DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_BYTES),
    ]


MAX_DECLARED = 64 << 30  # the largest payload the evaluation declares: 64 GiB
# Declared payload size buckets the figures are reported in: (upper bound in bytes, name).
BUCKETS = (
    (64 << 10, "<=64 KiB"),
    (1 << 20, "<=1 MiB"),
    (64 << 20, "<=64 MiB"),
    (1 << 30, "<=1 GiB"),
    (MAX_DECLARED, ">1 GiB"),
)


def bucket_of(size: np.ndarray) -> np.ndarray:
    """The bucket name of each declared payload size."""
    names = np.array([name for _, name in BUCKETS])
    return names[np.searchsorted([bound for bound, _ in BUCKETS[:-1]], size)]


@dataclass
class Requests:
    """(payload, link) pairs to score: which labelled row, the declared payload size and chunk, the link."""

    row: np.ndarray
    size: np.ndarray
    chunk: np.ndarray
    bandwidth_mbps: np.ndarray
    rtt_ms: np.ndarray
    loss: np.ndarray

    def truth(self, ratio: np.ndarray, vc: np.ndarray, vd: np.ndarray) -> np.ndarray:
        """Oracle seconds of every option for every request, from the measured properties of each labelled
        chunk (rows of `ratio`, `vc`, `vd`, already at the wanted host speed)."""
        r = self.row
        return transfer_seconds(
            self.size,
            self.chunk,
            ratio[r],
            vc[r],
            vd[r],
            bytes_per_second(self.bandwidth_mbps),
            self.rtt_ms / 1e3,
            self.loss,
        )


def requests(measured: np.ndarray, links_per_item: int, seed: int) -> Requests:
    """`links_per_item` requests per labelled chunk of `measured` bytes, with random links and declared sizes.

    A full chunk (`DEFAULT_CHUNK_BYTES`) stands for a payload of 1 MiB-64 GiB (log-uniform) sent in default
    chunks. A smaller one is, for half its links, the whole payload (declared size = its length), and for the
    other half one chunk of a payload of its length-64 GiB sent with `chunk_bytes` = its length.
    """
    rng = np.random.default_rng(seed)
    row = np.repeat(np.arange(len(measured)), links_per_item)
    e = measured[row].astype(float)
    bw, rtt, loss = random_links(rng, len(row))
    larger = np.exp(rng.uniform(np.log(e), np.log(MAX_DECLARED)))
    full = e >= DEFAULT_CHUNK_BYTES
    size = np.where(full | (rng.random(len(row)) < 0.5), np.where(full, larger, e), larger).round()
    chunk = np.where(size > e, e, DEFAULT_CHUNK_BYTES)
    return Requests(row, size, chunk, bw, rtt, loss)


def summary(chosen: np.ndarray, truth: np.ndarray) -> dict:
    """Near-best, exact-best, regret, and the picks' total time against always-zstd-3, always-none and the
    fixed option with the least total time (`vs_best_fixed` <= 1: the selector beat every fixed choice)."""
    picked = truth[np.arange(len(chosen)), chosen].sum()
    totals = truth.sum(0)
    best = int(totals.argmin())
    return {
        **oracle.score_many(chosen, truth),
        "vs_zstd-3": float(picked / totals[KEYS.index("zstd-3")]),
        "vs_none": float(picked / totals[0]),
        "best_fixed": KEYS[best],
        "vs_best_fixed": float(picked / totals[best]),
    }


def grouped(chosen: np.ndarray, truth: np.ndarray, groups: np.ndarray, order: Iterable[str] = ()) -> dict[str, dict]:
    """`summary` per group (in `order`, then the others sorted), groups without requests left out."""
    present = set(groups.tolist())
    names = [g for g in order if g in present] + sorted(present - set(order))
    return {g: summary(chosen[groups == g], truth[groups == g]) for g in names}


def by_family_and_bucket(
    chosen: np.ndarray, truth: np.ndarray, family: np.ndarray, bucket: np.ndarray
) -> dict[str, dict[str, dict]]:
    """`summary` per family and, within it, per declared-size bucket (`BUCKETS` order): the issue's target
    "selector time <= the best fixed codec's on every family and every size bucket" is read from its
    `vs_best_fixed` (the best fixed option chosen per cell)."""
    return {
        f: grouped(chosen[family == f], truth[family == f], bucket[family == f], [n for _, n in BUCKETS])
        for f in sorted(set(family.tolist()))
    }


@dataclass
class Evaluation:
    overall: dict[str, float]
    decisive: dict[str, float]  # only requests where the options differ by more than the 5% tolerance
    families: dict[str, dict[str, float]]  # per family: accuracy and end-to-end time ratios vs fixed options
    buckets: dict[str, dict[str, float]]  # the same per declared payload size bucket (`BUCKETS`)
    # The oracle against itself (`oracle_agreement`) on the same requests, when a second labelling was given:
    # "overall", and per bucket and per family as above.
    repeat: dict[str, dict] | None = None
    cells: dict[str, dict[str, dict]] | None = None  # per family, per bucket (`by_family_and_bucket`)


def _picks(
    models: tuple[Model, ...],
    cal: Calibration,
    data: Dataset,
    links_per_item: int,
    seed: int,
    xs: tuple[np.ndarray | None, ...] = (),
) -> tuple[Dataset, Requests, list[np.ndarray]]:
    """`data` at the host's calibrated speed, its (payload, link, declared size) requests (`requests`), and each
    model's pick for every request: on `data.x`, or on the model's own features `xs[i]` (rows as `data`'s) where
    given and not None (a model that reads some samples whole: `refeature`)."""
    from dwcp.compression.selector import Selector

    data = data.at_speed(cal.pilot)
    req = requests(data.size, links_per_item, seed)
    rest = (req.size, req.chunk, bytes_per_second(req.bandwidth_mbps), req.rtt_ms / 1e3, req.loss)
    xs = tuple(xs) + (None,) * (len(models) - len(xs))
    return (
        data,
        req,
        [
            Selector(m, cal).choose_features((data.x if x is None else x)[req.row], *rest)[0]
            for m, x in zip(models, xs, strict=True)
        ],
    )


def evaluate(
    model: Model,
    cal: Calibration,
    data: Dataset,
    links_per_item: int = 20,
    seed: int = 1,
    again: Dataset | None = None,
    x: np.ndarray | None = None,
) -> Evaluation:
    """Score the selector against the oracle on (payload, link, declared size) requests of a held-out dataset
    (`requests`), its speeds rescaled to the host's calibrated speed (as the model's predictions are).

    With `again` (the same payloads labelled in another run), also the oracle's own repeatability on the same
    requests (`oracle_agreement`): the near-best share no selector can be shown to beat on this host.
    `x`: the model's own features of `data`'s rows, when they are not `data.x` (`_picks`).
    """
    data, req, (chosen,) = _picks((model,), cal, data, links_per_item, seed, (x,))
    truth = req.truth(data.ratio, data.vc, data.vd)
    decisive = truth.max(1) > oracle.NEAR_BEST * truth.min(1)
    names, in_bucket, family = [name for _, name in BUCKETS], bucket_of(req.size), data.family[req.row]
    buckets = grouped(chosen, truth, in_bucket, names)
    repeat = None
    if again is not None:
        pick = oracle_agreement(data, again.at_speed(cal.pilot), req)
        repeat = {
            "overall": oracle.score_many(pick, truth),
            "buckets": grouped(pick, truth, in_bucket, names),
            "families": grouped(pick, truth, family),
        }
    return Evaluation(
        oracle.score_many(chosen, truth),
        oracle.score_many(chosen[decisive], truth[decisive]),
        grouped(chosen, truth, family),
        buckets,
        repeat,
        by_family_and_bucket(chosen, truth, family, in_bucket),
    )


def heldout_verdict(
    base: Model,
    candidate: Model,
    cal: Calibration,
    data: Dataset,
    links_per_item: int = 20,
    seed: int = 1,
    again: Dataset | None = None,
    candidate_x: np.ndarray | None = None,
) -> Verdict:
    """The ship rule (`shiprule`) for `candidate` against `base` on a held-out dataset, on the requests `evaluate`
    scores; with `again` (a second labelling of some or all of its payloads, matched by payload index), those
    payloads' truth is either labelling in each bootstrap draw. `candidate_x`: the candidate's own features of
    `data`'s rows, when they are not `data.x` (`_picks`)."""
    data, req, picks = _picks((base, candidate), cal, data, links_per_item, seed, (None, candidate_x))
    truths = [req.truth(data.ratio, data.vc, data.vd)]
    if again is not None:
        again = again.at_speed(cal.pilot)
        ratio, vc, vd = (np.full_like(getattr(data, f), np.nan) for f in ("ratio", "vc", "vd"))
        where = {int(i): r for r, i in enumerate(again.item)}
        for r, i in enumerate(data.item.tolist()):
            if i in where:
                if again.size[where[i]] != data.size[r] or again.family[where[i]] != data.family[r]:
                    raise ValueError(f"payload {i} of the second labelling is not the first's")
                ratio[r], vc[r], vd[r] = again.ratio[where[i]], again.vc[where[i]], again.vd[where[i]]
        truths.append(req.truth(ratio, vc, vd))
    return ship_verdict(*picks, truths, req, data.family[req.row])


def oracle_agreement(first: Dataset, again: Dataset, req: Requests) -> np.ndarray:
    """The oracle's pick for every request from `again`, a second labelling of `first`'s payloads (another run),
    to be scored on `first`'s truth: where the two runs' best options are not within 5% of each other, the
    labels are noise at that request, and no selector can be shown right or wrong there.

    Both sets must be the same payloads in the same order (same sizes, families and item numbers); speeds are
    taken as given (rescale both with `Dataset.at_speed` first).
    """
    if (
        len(first) != len(again)
        or not np.array_equal(first.size, again.size)
        or not np.array_equal(first.family, again.family)
        or not np.array_equal(first.item, again.item)
    ):
        raise ValueError("the second labelling is not of the same payloads as the first")
    return req.truth(again.ratio, again.vc, again.vd).argmin(axis=1)
