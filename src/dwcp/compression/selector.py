"""The selector: features -> predicted ratio and speeds per option -> cost model -> cheapest option.

The model predicts data properties only (ratio, compress and decompress speed of each option on chunks of
this data); the payload size, the chunk and the link enter through the cost model, so links and payload
sizes never seen in training are handled exactly the way the oracle would handle them. `load` builds the
service's selector from its artifact and the host's calibration.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dwcp.compression import calibrate
from dwcp.compression.calibrate import Calibration
from dwcp.compression.codecs import CODED, OPTIONS, Option
from dwcp.compression.costmodel import DEFAULT_CHUNK_BYTES, Link, transfer_seconds
from dwcp.compression.fallback import ProbeModel
from dwcp.compression.features import (
    FEATURE_NAMES,
    LEGACY_FEATURE_NAMES,
    MAX_LOG_CHUNK,
    N_FEATURES,
    Extractor,
    chunk_at_most,
)
from dwcp.compression.model import Model

DEFAULT_MODEL = Path(__file__).parent / "artifacts" / "selector.npz"


@dataclass(frozen=True, slots=True)
class Request:
    """One payload to choose for: a sample of it, its size, its link, the chunk it will be compressed in."""

    sample: bytes
    size_bytes: int
    link: Link
    chunk_bytes: int = DEFAULT_CHUNK_BYTES

    @property
    def chunk(self) -> int:
        """The bytes compressed as one unit: the chunk, or the whole payload when it is smaller."""
        return min(self.chunk_bytes, self.size_bytes)


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    option: Option
    seconds: float


class Selector:
    def __init__(self, model: Model | ProbeModel, calibration: Calibration) -> None:
        if model.options != tuple(o.key for o in CODED):
            raise ValueError(f"model predicts {model.options}, this build offers {tuple(o.key for o in CODED)}")
        if tuple(model.features) not in (FEATURE_NAMES, LEGACY_FEATURE_NAMES):
            raise ValueError(f"model reads features {tuple(model.features)}, this build extracts {FEATURE_NAMES}; "
                             "retrain it (`dwcp compression train`)")
        self.model = model
        self.calibration = calibration
        small = getattr(model, "small", None)
        self.extract = Extractor(whole_up_to=small.whole_up_to if small is not None else 0)
        self.max_log_chunk = trained_log_chunk(model)
        # properties() works on one (N, 3, options) block of logs: rows ratio, compress speed, decompress
        # speed; column 0 is `none` (ratio 1, infinite speeds), pinned there by its bounds. Keep a model that
        # extrapolates wildly (odd input) inside physical bounds: ratio in [1e-6, 1.5], speeds within a factor
        # e^8 (~3000) of the reference. No overflow, no zero or infinite time.
        k, inf = len(CODED), np.inf
        self._lo = np.array([[0.0] + [-13.8] * k, [inf] + [-8.0] * k, [inf] + [-8.0] * k])
        self._hi = np.array([[0.0] + [0.4] * k, [inf] + [8.0] * k, [inf] + [8.0] * k])
        self._log_ref = np.vstack([np.zeros(k + 1), np.log(calibration.vc), np.log(calibration.vd)])
        self._log_ref[1:, 0] = 0.0
        self._shift = small_chunk_shift(model, calibration)

    @property
    def version(self) -> str:
        return self.model.version

    def choose(self, requests: Sequence[Request]) -> list[Choice]:
        """The cheapest option for each request, with its predicted end-to-end seconds."""
        if len(requests) == 1:  # the common call: plain numbers, no per-request arrays
            r = requests[0]
            link = r.link
            i, secs = self.choose_one(self.extract(r.sample, r.chunk)[None, :], r.size_bytes, r.chunk_bytes,
                                      link.bandwidth_bps, link.rtt_s, link.loss_rate)
            return [Choice(i, OPTIONS[i], secs)]
        x = self.features(requests)
        a = np.array([(r.size_bytes, r.chunk_bytes, r.link.bandwidth_bps, r.link.rtt_s, r.link.loss_rate)
                      for r in requests])
        idx, secs = self.choose_features(x, *a.T)
        return [Choice(i, OPTIONS[i], s) for i, s in zip(idx.tolist(), secs.tolist(), strict=True)]

    def features(self, requests: Sequence[Request]) -> np.ndarray:
        x = np.empty((len(requests), N_FEATURES))
        for i, r in enumerate(requests):
            self.extract(r.sample, r.chunk, x[i])
        return x

    def properties(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted ratio, compress and decompress bytes/s for every option (`none` included), (N, options).

        exp(clip(log) + log reference) on one block: a handful of numpy calls whatever N is, since at one row
        per request numpy's per-call overhead, not the arithmetic, is the cost.
        """
        log_r, log_vc, log_vd = self.model.predict(self.within_training(x))
        e = np.zeros((log_r.shape[0], 3, self._lo.shape[1]))
        e[:, 0, 1:], e[:, 1, 1:], e[:, 2, 1:] = log_r, log_vc, log_vd
        # maximum then minimum is np.clip (same values, ~half its call overhead).
        np.maximum(e, self._lo, out=e)
        np.minimum(e, self._hi, out=e)
        if self._shift is not None:
            self._shift.apply(x[:, 0], e[:, 1, 1:])
        e += self._log_ref
        np.exp(e, out=e)
        return e[:, 0], e[:, 1], e[:, 2]

    def within_training(self, x: np.ndarray) -> np.ndarray:
        """`x` with a chunk larger than any the model was trained on read as the largest it was (a copy then).

        Past its data a model extrapolates the trend it learned, and the one below 512 KiB (per-call overhead
        amortised: larger is faster) runs the wrong way beyond: zstd-9 and zstd-19 on 1 MiB chunks of real
        files run ~2x slower than the shipped model, trained on chunks up to 512 KiB, predicted at 1 MiB
        (docs/compression.md, "Per-family misses"). The largest trained chunk's speeds are the nearest
        measured answer.
        """
        return chunk_at_most(x, self.max_log_chunk)

    def costs(self, x: np.ndarray, size, chunk, bandwidth_bps, rtt_s, loss) -> np.ndarray:
        """Predicted end-to-end seconds of each option, (N, options): the cost model on predicted properties."""
        ratio, vc, vd = self.properties(x)
        return transfer_seconds(size, chunk, ratio, vc, vd, bandwidth_bps, rtt_s, loss)

    def choose_features(self, x: np.ndarray, size, chunk, bandwidth_bps, rtt_s, loss) -> tuple[np.ndarray, np.ndarray]:
        """(chosen option index, its predicted seconds) per row of features."""
        t = self.costs(x, size, chunk, bandwidth_bps, rtt_s, loss)
        return t.argmin(axis=1), t.min(axis=1)

    def choose_one(self, x: np.ndarray, size: int, chunk: int, bandwidth_bps: float, rtt_s: float,
                   loss: float) -> tuple[int, float]:
        """`choose_features` for one row of features (1, N_FEATURES) and one request's plain numbers: the same
        arithmetic on one (3, options) block and on the options' rows, bit for bit, in fewer numpy calls (at
        one request per call numpy's per-call overhead is most of the cost)."""
        if x[0, 0] > self.max_log_chunk:  # within_training, on the one row
            x = x.copy()
            x[0, 0], x[0, 2] = self.max_log_chunk, max(self.max_log_chunk - x[0, 1], 0.0)
        log_r, log_vc, log_vd = self.model.predict(x)
        e = np.empty(self._lo.shape)
        e[:, 0] = 0.0
        e[0, 1:], e[1, 1:], e[2, 1:] = log_r[0], log_vc[0], log_vd[0]
        np.maximum(e, self._lo, out=e)
        np.minimum(e, self._hi, out=e)
        if self._shift is not None:
            self._shift.apply(x[:, 0], e[None, 1, 1:])
        e += self._log_ref
        np.exp(e, out=e)
        t = transfer_seconds(size, chunk, e[0], e[1], e[2], bandwidth_bps, rtt_s, loss)
        i = int(t.argmin())
        return i, float(t[i])


# A host's small-chunk compress shape moves an option's speed from the labels' by its difference from the reference
# shape less DEADBAND, at most MAX_SHIFT (log units). The speed-mode change seen on this VM moved lz4 on 0.25-16
# KiB chunks by 0.2-0.3 (docs/compression.md, "Session 8"); calibrations in one mode differ by up to 0.12 (s.d.
# 0.02-0.04 per option and chunk size; "Session 9"): that much is noise, and moving by it cost decisions.
DEADBAND = 0.1
MAX_SHIFT = math.log(2.0)


@dataclass(frozen=True, slots=True)
class ChunkShift:
    """Log compress-speed moves per option at each calibrated chunk size (`knots`, log2 bytes), for chunks up to
    2^`below`: the serving host's per-chunk shape minus the one the model's small-chunk part was fitted in.
    Linear in log2 chunk between knots, the end knots' moves beyond them."""

    below: float
    knots: tuple[float, ...]
    moves: np.ndarray  # (knots, coded options)

    def at(self, log_chunk: float) -> np.ndarray | None:
        """The move for one chunk (None above `below`)."""
        if log_chunk > self.below:
            return None
        k, m = self.knots, self.moves
        if log_chunk <= k[0]:
            return m[0]
        if log_chunk >= k[-1]:
            return m[-1]
        j = bisect.bisect_right(k, log_chunk) - 1
        return m[j] + (log_chunk - k[j]) / (k[j + 1] - k[j]) * (m[j + 1] - m[j])

    def apply(self, log_chunk: np.ndarray, log_vc: np.ndarray) -> None:
        """Add the moves to rows of log compress speeds `log_vc` (N, coded options), in place."""
        if len(log_chunk) == 1:  # the one-request call: scalars
            move = self.at(float(log_chunk[0]))
            if move is not None:
                log_vc += move
            return
        rows = log_chunk <= self.below
        if not rows.any():
            return
        t = np.interp(log_chunk[rows], self.knots, np.arange(len(self.knots), dtype=float))
        j = np.minimum(t.astype(int), len(self.knots) - 2)
        w = (t - j)[:, None]
        log_vc[rows] += self.moves[j] * (1.0 - w) + self.moves[j + 1] * w


def needs_chunk_speeds(model: Model | ProbeModel) -> bool:
    """Whether serving `model` compares this host's per-chunk compress speeds with its own (`small_chunk_shift`)."""
    small = getattr(model, "small", None)
    return small is not None and small.reference_shape is not None


def small_chunk_shift(model: Model | ProbeModel, calibration: Calibration) -> ChunkShift | None:
    """How this host's small chunks compress relative to the mode the model's small-chunk part was fitted in, or
    None when either side was not measured (a model without a reference shape, a /2 calibration) or they were
    measured at different chunk sizes. Each move is the difference less DEADBAND (none within it), at most MAX_SHIFT."""
    now = calibration.chunk_shape()
    if not needs_chunk_speeds(model) or now is None:
        return None
    small = model.small
    if tuple(small.reference_log2) != tuple(float(b) for b in calibrate.CHUNK_LOG2):
        return None
    d = now[:, 1:] - small.reference_shape
    moves = np.sign(d) * np.clip(np.abs(d) - DEADBAND, 0.0, MAX_SHIFT)
    return ChunkShift(small.below, tuple(small.reference_log2), moves)


# Artifacts from before chunks (mlp-bc45da71d8 and earlier) do not record their largest training chunk: their
# payloads were measured whole, 256 B-512 KiB (docs/compression.md, "Training and retraining").
LEGACY_MAX_CHUNK_BYTES = 512 << 10


def trained_log_chunk(model: Model | ProbeModel) -> float:
    """log2 of the largest chunk in `model`'s training data (artifact header `training.max_chunk_bytes`); without
    that record, 512 KiB for a pre-chunk artifact, else the extractor's own cap (1 MiB)."""
    legacy = tuple(model.features) == LEGACY_FEATURE_NAMES
    default = math.log2(LEGACY_MAX_CHUNK_BYTES) if legacy else MAX_LOG_CHUNK
    recorded = getattr(model, "training", {}).get("max_chunk_bytes")
    return default if recorded is None else math.log2(recorded)


@dataclass(frozen=True, slots=True)
class Loaded:
    """What the service serves with, and what to say about it on /health and /v1/model."""

    selector: Selector
    model_path: Path
    calibration_path: Path
    calibrated_now: bool  # no usable calibration was stored: it ran at start
    warning: str  # why the service is degraded ("" when it is not)


def load(model_path: Path | None, calibration_path: Path) -> Loaded:
    """The selector for the artifact at `model_path` (default: the shipped one) and this host's calibration,
    run and stored first when missing (blocking: seconds to tens of seconds).

    A missing, damaged or mismatched artifact does not stop the service: it serves on `ProbeModel`, with a
    warning that /health reports as degraded.
    """
    model_path = model_path or DEFAULT_MODEL
    warning = ""
    model: Model | ProbeModel | None = None
    failure: Exception | None = None
    try:
        model = Model.load(model_path)
    except (OSError, ValueError, KeyError) as exc:
        failure = exc
    cal, ran = calibrate.load_or_run(calibration_path, chunk_speeds=model is not None and needs_chunk_speeds(model))
    if model is not None:
        try:
            selector = Selector(model, cal)  # refuses a model made for other features or options
        except (OSError, ValueError, KeyError) as exc:
            model, failure = None, exc
    if model is None:
        model = ProbeModel(cal)
        selector = Selector(model, cal)
        warning = f"no usable trained model ({type(failure).__name__}: {failure}); using the probe fallback"
    if model.reference_sha256 and model.reference_sha256 != cal.reference_sha256:
        warning = "calibration reference differs from the model's; recalibrate with this dwcp version"
    return Loaded(selector, model_path, calibration_path, ran, warning)
