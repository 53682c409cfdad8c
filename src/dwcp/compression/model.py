"""The model: a small MLP that predicts each option's log ratio and log relative speeds, in numpy.

Artifact format (one `.npz`, read with `allow_pickle=False`, so loading never runs code):
- `header`: uint8 array holding UTF-8 JSON: `format` ("dwcp-compression-model/1"), `version`, `features`
  (input names, in order), `options` (option keys the outputs refer to), `outputs` (one name per output
  column: `log_ratio:<key>`, `log_vc_rel:<key>`, `log_vd_rel:<key>`), `activation`, `reference_sha256`
  (the calibration reference array the speeds are relative to) and `training` (data, held-out scores).
- `x_mean`, `x_std`: input standardisation; `y_mean`, `y_std`: output de-standardisation.
- `W0`, `b0`, ... `W{L-1}`, `b{L-1}`: dense layers, ReLU between them, linear last layer.
Prediction: `y = MLP((x - x_mean) / x_std) * y_std + y_mean`.

Format /2 adds a large-chunk part (`LargeChunks`): header `large_chunks` (`above_log2_chunk`) and arrays
`large_x_mean`, `large_x_std`, `large_W`. Rows whose chunk is at most 2^above_log2_chunk get the MLP's output
exactly as in /1; larger chunks get the MLP's output for a chunk of 2^above_log2_chunk, plus
`[1, (x - large_x_mean) / large_x_std] @ large_W` when the chunk is above 2^apply_above_log2_chunk (header
`large_chunks.apply_above_log2_chunk`, default: above_log2_chunk).

Format /3 adds a small-chunk part (`SmallChunks`), with or without a large one: header `small_chunks`
(`below_log2_chunk`) and arrays `small_x_mean`, `small_x_std`, `small_W`. Rows whose chunk is at most
2^below_log2_chunk get `[1, (x - small_x_mean) / small_x_std] @ small_W` added to the MLP's output; larger chunks
are answered exactly as without it. A reader of /1 and /2 refuses /3 rather than drop the part unnoticed.
Optional in /3: `small_chunks.shape_features` (feature names: the correction's columns are the standardised
features and their products with each of these, as the large part's), and `small_chunks.reference_compress_shape`
(`log2_chunks`, and per option `log_speed_over_reference`, one per chunk size): the per-chunk compress-speed shape
of the host mode the part was fitted in (`SmallChunks.reference_shape`; used by `selector.ChunkShift`).

Format /4 is /3 whose small-chunk part was fitted on features of the whole sample wherever the sample is all of
its chunk (at most 2^below_log2_chunk bytes): the selector extracts those rows' features so
(`features.Extractor.whole_up_to`). A reader of /1-/3 refuses /4 rather than feed the part probe-region features.

Format /5 is /4 whose small-chunk part answers the log ratios itself, as residuals of a measured input
(header `small_chunks.ratio_anchor`, a feature name: `zstd1_ratio`): for rows of chunks up to 2^below_log2_chunk
the log ratio of option c is log(anchor feature) + the part's column for c (the MLP's ratio is not used there),
the speeds the MLP's plus the part's as in /3. With `small_chunks.ratio_anchor_option` (an option key, `zstd-1`)
the MLP's ratios are kept relative to that option's: log ratio_c = log(anchor) + MLP_c - MLP_option + the part's
column. A reader of /1-/4 refuses /5 rather than add residuals to the MLP's ratios.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dwcp.compression.features import chunk_at_most

FORMAT = "dwcp-compression-model/1"
FORMAT_LARGE = "dwcp-compression-model/2"  # with a large-chunk part
FORMAT_SMALL = "dwcp-compression-model/3"  # with a small-chunk part (and maybe a large-chunk one)
FORMAT_WHOLE = "dwcp-compression-model/4"  # /3 whose small-chunk part reads a sample that is its chunk whole
FORMAT_ANCHORED = "dwcp-compression-model/5"  # /4 whose small-chunk ratios are residuals of a measured input
FORMATS = (FORMAT, FORMAT_LARGE, FORMAT_SMALL, FORMAT_WHOLE, FORMAT_ANCHORED)
# The smallest anchor feature read (a compressed/original ratio): an empty sample's features are all 0, and
# 64 KiB of zeros compress to ~3e-4 of their size under zstd-1.
ANCHOR_FLOOR = 1e-5


@dataclass
class LargeChunks:
    """What chunks larger than the MLP's training data are like: its answer at its largest chunk, corrected.

    Why a correction and not a refit: an MLP trained on chunks up to 512 KiB extrapolates "larger is faster"
    past them, yet a refit of the whole model on new large-chunk labels moves its small-chunk answers too (the
    2026-12-04 candidates lost 0.4-0.6 points on synthetic <= 1 MiB). A per-output linear map of the features,
    fitted on the residuals of labelled large chunks only, changes nothing at or below `above` by construction
    and needs far fewer labels than an MLP (a 1 MiB chunk costs seconds of oracle time per label).
    """

    above: float  # log2 of the largest chunk the MLP answers for alone (19: 512 KiB)
    x_mean: np.ndarray
    x_std: np.ndarray
    weights: np.ndarray  # (1 + columns, outputs): the intercept row, then one row per column of `design`
    # log2 of the chunk above which the correction applies (None: `above`). Between the two, the MLP's answer at
    # `above` stands uncorrected: a threshold chosen by cross-validated decisions on the training chunks
    # (`train.choose_threshold`), where the correction helps many-chunk payloads but costs single-chunk ones.
    apply_above: float | None = None
    # Feature indices that shape the correction per kind of data: each standardised feature times each of these
    # is a column too, so the slope of (say) the chunk size may differ between zero-block-rich data and text.
    # One linear map shared by every family lost synthetic `pages` and `numeric` (session 6).
    shape: tuple[int, ...] = ()
    _side_by_side: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def threshold(self) -> float:
        """log2 of the smallest chunk that is corrected: rows with a larger chunk feature get the correction."""
        return self.above if self.apply_above is None else self.apply_above

    def correction(self, x: np.ndarray) -> np.ndarray:
        """The outputs' correction (log units) for feature rows `x`, all of chunks above `above`.

        `design(x) @ weights[1:]` without building the product columns: their rows of weights are blocks W_s
        (features x outputs), and (z * z_s) @ W_s = z_s * (z @ W_s), so one matmul of z against the blocks side
        by side, then each block's result scaled by its shape feature (a third of the one-row cost).
        """
        z = (x - self.x_mean) / self.x_std
        if not self.shape:
            return self.weights[0] + z @ self.weights[1:]
        blocks = (z @ self._blocks()).reshape(len(z), 1 + len(self.shape), self.weights.shape[1])
        return self.weights[0] + blocks[:, 0] + (z[:, None, self.shape] @ blocks[:, 1:])[:, 0]

    def _blocks(self) -> np.ndarray:
        if self._side_by_side is None:
            f = len(self.x_mean)
            self._side_by_side = np.hstack(
                [self.weights[1 + i * f : 1 + (i + 1) * f] for i in range(1 + len(self.shape))]
            )
        return self._side_by_side

    def design(self, x: np.ndarray) -> np.ndarray:
        """The regression's columns: the standardised features, then their products with each `shape` one."""
        return _design((x - self.x_mean) / self.x_std, self.shape)

    @classmethod
    def fit(
        cls, above: float, x: np.ndarray, residual: np.ndarray, ridge: float | np.ndarray, shape: tuple[int, ...] = ()
    ) -> LargeChunks:
        """Ridge regression of `residual` (measured minus the MLP's outputs, rows of chunks above `above`) on
        the standardised features (and their products with the `shape` ones); `ridge` (one for all outputs, or
        one per output) penalises the slopes (not the intercept) per row of data; an infinite one leaves its
        output uncorrected. Applied above `above` (set `apply_above` for a higher threshold)."""
        x_mean, x_std = x.mean(0), x.std(0) + 1e-6
        a = np.hstack([np.ones((len(x), 1)), _design((x - x_mean) / x_std, tuple(shape))])
        per_output = np.broadcast_to(np.asarray(ridge, float), residual.shape[1:])
        weights = np.zeros((a.shape[1], residual.shape[1]))
        for r in np.unique(per_output[np.isfinite(per_output)]):
            cols = per_output == r
            penalty = np.eye(a.shape[1]) * r * len(x)
            penalty[0, 0] = 0.0
            weights[:, cols] = np.linalg.solve(a.T @ a + penalty, a.T @ residual[:, cols])
        return cls(above, x_mean, x_std, weights, shape=tuple(shape))


@dataclass
class SmallChunks:
    """What small chunks are like on the host the labels were measured on: the MLP's answer, corrected.

    Why: measured on this host (2026-12-05, the calibration's slow mode, pilot 240 MB/s against 324-333 MB/s in
    the run of 2026-12-04), the MLP of 2026-11-26 predicts lz4 1.2-1.35x too fast on chunks of 256 B-16 KiB (log
    error +0.20 to +0.29, s.d. 0.10; +0.08 at 16-64 KiB) and brotli-1 ~1.1x; on dwcp up's own request mix, where
    1-8 KiB samples stand for payloads of hundreds of MB, those chunk speeds decide the pick
    (docs/compression.md, "Session 8"). A per-output linear map of the features, fitted on the residuals of
    small labelled payloads (each one chunk), leaves every larger chunk's answer bit for bit.
    """

    below: float  # log2 of the largest chunk corrected (16: 64 KiB)
    x_mean: np.ndarray
    x_std: np.ndarray
    weights: np.ndarray  # (1 + features, outputs): the intercept row, then one row per standardised feature
    # The speed mode the correction belongs to: log(compress speed on chunks of 2^reference_log2[b] bytes / on the
    # calibration reference) per chunk size and option (`Calibration.chunk_shape()` without `none`), measured on
    # the host and in the mode its labels were; None when not recorded. The selector moves the compress speeds of
    # small chunks by the serving host's own shape minus this one, so a host whose small chunks run relatively
    # slower or faster than the labels' (a speed-mode change) is answered for its present mode.
    reference_log2: tuple[float, ...] = ()
    reference_shape: np.ndarray | None = None
    # Feature indices shaping the correction per kind of data, as `LargeChunks.shape` (session 9: the chunk size and
    # the zstd-1 probe ratio); `weights` then has 1 + features x (1 + len(shape)) rows.
    shape: tuple[int, ...] = ()
    # Whether the part was fitted on features of the whole sample where the sample is all of its chunk (at most
    # 2^below bytes), not of the 16 KiB probe region (`features.Extractor.whole_up_to`; session 10): the selector
    # then extracts them so, for every model input of those rows (the MLP's too).
    whole_sample: bool = False
    # Index of the feature whose log the ratio outputs are residuals of (format /5; None: the ratio outputs are
    # corrections of the MLP's, as the speeds'). Session 13: on `lz` samples the model's zstd-1 ratio was off by
    # s.d. 0.20-0.26 (log) while its own whole-sample `zstd1_ratio` input equals the truth within 0.004; a part
    # that starts from that input and learns each option's offset from it cannot lose what the input measured.
    anchor: int | None = None
    # With an anchor, the option (index in `options`) whose MLP ratio the anchor replaces, the MLP's differences
    # between options (its shape) kept: log ratio_c = anchor + MLP_c - MLP_anchor_option + the part's column.
    # None: the part answers the ratios from the anchor alone.
    anchor_option: int | None = None
    _part: LargeChunks | None = field(default=None, init=False, repr=False, compare=False)

    def apply(self, y: np.ndarray, x: np.ndarray) -> None:
        """Answer rows `x` (all of chunks up to 2^below) in `y`, the MLP's outputs for them, in place: the
        correction added, or with an anchor the ratio columns replaced by log(anchor) + the part's columns."""
        if self.anchor is not None:
            anchor_ratios(y, x, self.anchor, self.anchor_option)
        y += self.correction(x)

    def correction(self, x: np.ndarray) -> np.ndarray:
        if not self.shape:
            return self.weights[0] + ((x - self.x_mean) / self.x_std) @ self.weights[1:]
        if self._part is None:  # the shaped product, computed as the large part does (its blocks cached there)
            self._part = LargeChunks(self.below, self.x_mean, self.x_std, self.weights, shape=self.shape)
        return self._part.correction(x)

    @classmethod
    def fit(
        cls,
        below: float,
        x: np.ndarray,
        residual: np.ndarray,
        ridge: float | np.ndarray,
        shape: tuple[int, ...] = (),
        whole_sample: bool = False,
        anchor: int | None = None,
        anchor_option: int | None = None,
    ) -> SmallChunks:
        """Ridge regression of `residual` (measured minus the MLP's outputs; with `anchor`, the ratio columns
        measured minus log(x[:, anchor])) on the standardised features (and their products with the `shape`
        ones), as `LargeChunks.fit` (an infinite `ridge` leaves its output uncorrected: with an anchor, a ratio
        output is then the anchor itself). `whole_sample`: `x` was extracted with `Extractor(whole_up_to=2**below)`."""
        part = LargeChunks.fit(below, x, residual, ridge, shape=tuple(shape))
        return cls(
            below,
            part.x_mean,
            part.x_std,
            part.weights,
            shape=tuple(shape),
            whole_sample=whole_sample,
            anchor=anchor,
            anchor_option=anchor_option,
        )

    @property
    def whole_up_to(self) -> int:
        """`Extractor.whole_up_to` for the model this part belongs to (0: the probe region always)."""
        return 1 << int(self.below) if self.whole_sample else 0

    def with_reference(self, log2_chunks: tuple[float, ...], shape: np.ndarray) -> SmallChunks:
        """This part, recorded as belonging to a host whose per-chunk compress shape is `shape`."""
        return SmallChunks(
            self.below,
            self.x_mean,
            self.x_std,
            self.weights,
            tuple(float(b) for b in log2_chunks),
            np.asarray(shape, float),
            self.shape,
            self.whole_sample,
            self.anchor,
            self.anchor_option,
        )


def anchor_log(x: np.ndarray, anchor: int) -> np.ndarray:
    """log of feature `anchor` per row of `x`, as a column (N, 1), floored at `ANCHOR_FLOOR`."""
    return np.log(np.maximum(x[:, [anchor]], ANCHOR_FLOOR))


def anchor_ratios(y: np.ndarray, x: np.ndarray, anchor: int, option: int | None) -> None:
    """The ratio columns of `y` (the MLP's outputs for rows `x`) replaced, in place, by the anchor's log (the part's
    base before its correction): alone, or with `option`, plus the MLP's ratios relative to that option's."""
    k = y.shape[1] // 3
    shape = 0.0 if option is None else y[:, :k] - y[:, [option]]
    y[:, :k] = anchor_log(x, anchor) + shape


def _small_on_rows(y: np.ndarray, x: np.ndarray, rows: np.ndarray, part: SmallChunks) -> None:
    """The small-chunk part's answer (`SmallChunks.apply`) for the rows of `x` selected by `rows`, in `y`."""
    if rows.all():
        part.apply(y, x)
    elif rows.any():
        sub = y[rows]
        part.apply(sub, x[rows])
        y[rows] = sub


def _add_on_rows(
    y: np.ndarray, x: np.ndarray, rows: np.ndarray, correction: Callable[[np.ndarray], np.ndarray]
) -> None:
    """Add a part's `correction` to the outputs `y` of the rows of `x` selected by `rows` (no masking when all
    or none are)."""
    if rows.all():
        y += correction(x)
    elif rows.any():
        y[rows] += correction(x[rows])


def _design(z: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.hstack([z, *(z * z[:, [s]] for s in shape)]) if shape else z


@dataclass
class Model:
    features: tuple[str, ...]
    options: tuple[str, ...]
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    reference_sha256: str = ""
    training: dict = field(default_factory=dict)
    version: str = ""
    large: LargeChunks | None = None  # format /2: chunks above large.above get the MLP's answer corrected
    small: SmallChunks | None = None  # format /3: chunks up to small.below get the MLP's answer corrected
    _plan: list | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def outputs(self) -> list[str]:
        return [f"{kind}:{k}" for kind in ("log_ratio", "log_vc_rel", "log_vd_rel") for k in self.options]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(log ratio, log compress speed / reference, log decompress speed / reference), each (N, options).

        With a large-chunk part, rows of larger chunks than `large.above` go through the MLP as chunks of that
        size (the other rows unchanged, so their outputs are the MLP's bit for bit), then get the correction.
        """
        x = np.atleast_2d(x)
        if self.large is None:
            y = self._mlp(x)
        elif len(x) == 1:  # the service's one-request call: the same steps on scalars, not masks (~20 us less)
            above, chunk = self.large.above, x[0, 0]
            capped = x
            if chunk > above:
                capped = x.copy()
                capped[0, 0], capped[0, 2] = above, max(above - x[0, 1], 0.0)
            y = self._mlp(capped)
            if chunk > self.large.threshold:
                y += self.large.correction(x)
        else:
            y = self._mlp(chunk_at_most(x, self.large.above))
            # (every row is over in the service's common call: one request of a payload sent in 1 MiB chunks)
            _add_on_rows(y, x, x[:, 0] > self.large.threshold, self.large.correction)
        if self.small is not None:
            if len(x) == 1:
                if x[0, 0] <= self.small.below:
                    self.small.apply(y, x)
            else:
                _small_on_rows(y, x, x[:, 0] <= self.small.below, self.small)
        k = len(self.options)
        return y[:, :k], y[:, k : 2 * k], y[:, 2 * k :]

    def _mlp(self, x: np.ndarray) -> np.ndarray:
        h = ((x - self.x_mean) / self.x_std).astype(np.float32)
        for w, b, blocks, relu in self._plan or self._make_plan():
            if blocks > 1:  # block-diagonal layer (merged ensemble): one small matmul per block
                n = h.shape[0]
                h = np.matmul(h.reshape(n, blocks, -1).transpose(1, 0, 2), w).transpose(1, 0, 2).reshape(n, -1) + b
            else:
                h = h @ w + b
            if relu:
                np.maximum(h, 0.0, out=h)
        return h.astype(np.float64) * self.y_std + self.y_mean

    def _make_plan(self) -> list[tuple[np.ndarray, np.ndarray, int, bool]]:
        """float32 layers for inference, block-diagonal hidden layers split into their blocks (exact)."""
        plan, last = [], len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            k = _diagonal_blocks(w) if 0 < i < last else 1
            if k > 1:
                r, c = w.shape[0] // k, w.shape[1] // k
                w = np.stack([w[j * r : (j + 1) * r, j * c : (j + 1) * c] for j in range(k)])
            plan.append((w.astype(np.float32), b.astype(np.float32), k, i < last))
        self._plan = plan
        return plan

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        large = () if self.large is None else (self.large.x_mean, self.large.x_std, self.large.weights)
        if self.large is not None and self.large.apply_above is not None:
            large += (np.array([self.large.apply_above]),)
        if self.large is not None and self.large.shape:
            large += (np.array(self.large.shape) + 1000,)  # offset: never a prefix of another array's bytes
        if self.small is not None:
            large += (np.array([self.small.below, -1.0]), self.small.x_mean, self.small.x_std, self.small.weights)
            if self.small.reference_shape is not None:
                large += (np.array([-2.0, *self.small.reference_log2]), self.small.reference_shape)
            if self.small.shape:
                large += (np.array(self.small.shape) + 2000,)
            if self.small.whole_sample:
                large += (np.array([-3.0]),)
            if self.small.anchor is not None:
                large += (
                    np.array(
                        [-4.0, self.small.anchor, -1 if self.small.anchor_option is None else self.small.anchor_option]
                    ),
                )
        for arr in (self.x_mean, self.x_std, self.y_mean, self.y_std, *self.weights, *self.biases, *large):
            digest.update(np.ascontiguousarray(arr, np.float32).tobytes())
        return digest.hexdigest()[:10]

    def _format(self) -> str:
        if self.small is None:
            return FORMAT if self.large is None else FORMAT_LARGE
        if self.small.anchor is not None:
            if not self.small.whole_sample:  # /5 is /4's reading plus the anchor: a region-read anchor has no format
                raise ValueError("a ratio-anchored small-chunk part must read samples that are their chunk whole")
            return FORMAT_ANCHORED
        return FORMAT_WHOLE if self.small.whole_sample else FORMAT_SMALL

    def save(self, path: Path) -> None:
        header = {
            "format": self._format(),
            "version": self.version or f"mlp-{self.fingerprint()}",
            "features": list(self.features),
            "options": list(self.options),
            "outputs": self.outputs,
            "activation": "relu",
            "layers": [list(w.shape) for w in self.weights],
            "reference_sha256": self.reference_sha256,
            "training": self.training,
        }
        arrays = {"x_mean": self.x_mean, "x_std": self.x_std, "y_mean": self.y_mean, "y_std": self.y_std}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"W{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        if self.large is not None:
            header["large_chunks"] = {"above_log2_chunk": self.large.above}
            if self.large.apply_above is not None:
                header["large_chunks"]["apply_above_log2_chunk"] = self.large.apply_above
            if self.large.shape:
                header["large_chunks"]["shape_features"] = [self.features[i] for i in self.large.shape]
            arrays |= {
                "large_x_mean": self.large.x_mean,
                "large_x_std": self.large.x_std,
                "large_W": self.large.weights,
            }
        if self.small is not None:
            header["small_chunks"] = {"below_log2_chunk": self.small.below}
            if self.small.shape:
                header["small_chunks"]["shape_features"] = [self.features[i] for i in self.small.shape]
            if self.small.anchor is not None:
                header["small_chunks"]["ratio_anchor"] = self.features[self.small.anchor]
                if self.small.anchor_option is not None:
                    header["small_chunks"]["ratio_anchor_option"] = self.options[self.small.anchor_option]
            if self.small.reference_shape is not None:
                header["small_chunks"]["reference_compress_shape"] = {
                    "log2_chunks": list(self.small.reference_log2),
                    "log_speed_over_reference": {
                        k: self.small.reference_shape[:, j].tolist() for j, k in enumerate(self.options)
                    },
                }
            arrays |= {
                "small_x_mean": self.small.x_mean,
                "small_x_std": self.small.x_std,
                "small_W": self.small.weights,
            }
        arrays["header"] = np.frombuffer(json.dumps(header, indent=1).encode(), np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path: Path) -> Model:
        """Read an artifact; any damage (truncation, missing arrays, bad header) raises ValueError."""
        try:
            return cls._load(path)
        except (zipfile.BadZipFile, EOFError, KeyError, IndexError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: damaged model artifact ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def _load(cls, path: Path) -> Model:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            if header.get("format") not in FORMATS:
                raise ValueError(f"{path}: not a selector model (format {header.get('format')!r})")
            n = len(header["layers"])
            weights = [z[f"W{i}"].astype(np.float64) for i in range(n)]
            biases = [z[f"b{i}"].astype(np.float64) for i in range(n)]
            m = cls(
                tuple(header["features"]),
                tuple(header["options"]),
                z["x_mean"],
                z["x_std"],
                z["y_mean"],
                z["y_std"],
                weights,
                biases,
                header.get("reference_sha256", ""),
                header.get("training", {}),
                header["version"],
            )
            if header["format"] in (FORMAT_SMALL, FORMAT_WHOLE, FORMAT_ANCHORED):
                part = header["small_chunks"]
                anchored = header["format"] == FORMAT_ANCHORED
                m.small = SmallChunks(
                    float(part["below_log2_chunk"]),
                    z["small_x_mean"],
                    z["small_x_std"],
                    z["small_W"],
                    shape=tuple(header["features"].index(f) for f in part.get("shape_features", [])),
                    whole_sample=header["format"] in (FORMAT_WHOLE, FORMAT_ANCHORED),
                    anchor=header["features"].index(part["ratio_anchor"]) if anchored else None,
                    anchor_option=header["options"].index(part["ratio_anchor_option"])
                    if anchored and "ratio_anchor_option" in part
                    else None,
                )
                ref = part.get("reference_compress_shape")
                if ref is not None:
                    m.small = m.small.with_reference(
                        tuple(ref["log2_chunks"]),
                        np.array([ref["log_speed_over_reference"][k] for k in m.options], float).T,
                    )
            if "large_chunks" in header:
                part = header["large_chunks"]
                apply_above = part.get("apply_above_log2_chunk")
                shape = tuple(header["features"].index(f) for f in part.get("shape_features", []))
                m.large = LargeChunks(
                    float(part["above_log2_chunk"]),
                    z["large_x_mean"],
                    z["large_x_std"],
                    z["large_W"],
                    None if apply_above is None else float(apply_above),
                    shape,
                )
        if m.outputs != header["outputs"] or weights[0].shape[0] != len(m.features):
            raise ValueError(f"{path}: header and arrays disagree")
        if m.large is not None and m.large.weights.shape != (
            1 + len(m.features) * (1 + len(m.large.shape)),
            3 * len(m.options),
        ):
            raise ValueError(f"{path}: large-chunk weights {m.large.weights.shape} do not fit the model")
        if m.small is not None and m.small.weights.shape != (
            1 + len(m.features) * (1 + len(m.small.shape)),
            3 * len(m.options),
        ):
            raise ValueError(f"{path}: small-chunk weights {m.small.weights.shape} do not fit the model")
        if (
            m.small is not None
            and m.small.reference_shape is not None
            and m.small.reference_shape.shape != (len(m.small.reference_log2), len(m.options))
        ):
            raise ValueError(f"{path}: small-chunk reference shape does not fit the model")
        if m.large is not None and m.large.threshold < m.large.above:
            raise ValueError(f"{path}: large-chunk correction applied below the MLP's largest chunk")
        if weights[-1].shape[1] != 3 * len(m.options):
            raise ValueError(f"{path}: last layer has {weights[-1].shape[1]} outputs, expected {3 * len(m.options)}")
        return m


def fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    features: tuple[str, ...],
    options: tuple[str, ...],
    hidden: tuple[int, ...] = (128, 128),
    epochs: int = 300,
    batch: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 1e-5,
    seed: int = 0,
    y_weight: np.ndarray | None = None,
    row_weight: np.ndarray | None = None,
    on_epoch=None,
) -> Model:
    """Adam on weighted MSE in standardised output space; hand-written backprop (two layers need no autograd).

    `y_weight` weighs output columns, `row_weight` training rows (normalised to a mean of 1).
    """
    rng = np.random.default_rng(seed)
    x_mean, x_std = x.mean(0), x.std(0) + 1e-6
    y_mean, y_std = y.mean(0), y.std(0) + 1e-6
    xs, ys = (x - x_mean) / x_std, (y - y_mean) / y_std
    wcol = np.ones(y.shape[1]) if y_weight is None else y_weight
    wrow = np.ones(len(x)) if row_weight is None else row_weight * (len(x) / np.sum(row_weight))
    sizes = (x.shape[1], *hidden, y.shape[1])
    ws = [rng.normal(0, np.sqrt(2.0 / a), (a, b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [np.zeros(b) for b in sizes[1:]]
    params = ws + bs
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    step, n = 0, len(xs)
    for epoch in range(epochs):
        rate = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))  # cosine decay: settles into a minimum
        order = rng.permutation(n)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            acts = [xs[idx]]
            for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
                h = acts[-1] @ w + b
                acts.append(np.maximum(h, 0.0) if i < len(ws) - 1 else h)
            grad = 2.0 * (acts[-1] - ys[idx]) * wcol * wrow[idx, None] / len(idx)
            gws, gbs = [None] * len(ws), [None] * len(ws)
            for i in range(len(ws) - 1, -1, -1):
                gws[i] = acts[i].T @ grad + weight_decay * ws[i]
                gbs[i] = grad.sum(0)
                if i:
                    grad = (grad @ ws[i].T) * (acts[i] > 0)
            step += 1
            for j, (p, g) in enumerate(zip(params, gws + gbs, strict=True)):
                m1[j] = 0.9 * m1[j] + 0.1 * g
                m2[j] = 0.999 * m2[j] + 0.001 * g * g
                p -= rate * (m1[j] / (1 - 0.9**step)) / (np.sqrt(m2[j] / (1 - 0.999**step)) + 1e-8)
        if on_epoch is not None:
            on_epoch(epoch)
    return Model(features, options, x_mean, x_std, y_mean, y_std, ws, bs)


def merge(members: list[Model]) -> Model:
    """One MLP that computes the mean of `members`' outputs exactly (an ensemble, stored in the same format).

    Members share the input and output standardisation (fitted on the same data), so their hidden layers
    can sit side by side: the first layer's weights are stacked column-wise, the hidden ones block-diagonally,
    and the last layer's stacked row-wise and divided by the member count.
    """
    first = members[0]
    for m in members[1:]:
        if not (np.allclose(m.x_mean, first.x_mean) and np.allclose(m.y_std, first.y_std)):
            raise ValueError("ensemble members must be fitted on the same data")
    k, layers = len(members), len(first.weights)
    weights, biases = [], []
    for i in range(layers):
        ws, bs = [m.weights[i] for m in members], [m.biases[i] for m in members]
        if i == 0:
            w, b = np.hstack(ws), np.concatenate(bs)
        elif i < layers - 1:
            w, b = _block_diag(ws), np.concatenate(bs)
        else:
            w, b = np.vstack(ws) / k, np.mean(bs, axis=0)
        weights.append(w)
        biases.append(b)
    if layers == 1:  # a linear model: the first layer is also the last
        weights = [np.mean([m.weights[0] for m in members], axis=0)]
        biases = [np.mean([m.biases[0] for m in members], axis=0)]
    return Model(first.features, first.options, first.x_mean, first.x_std, first.y_mean, first.y_std, weights, biases)


def _block_diag(blocks: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)))
    r = c = 0
    for b in blocks:
        out[r : r + b.shape[0], c : c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


def _diagonal_blocks(w: np.ndarray) -> int:
    """The most equal square-ish blocks w splits into with zeros everywhere off the diagonal (1 if none)."""
    for k in range(16, 1, -1):
        if w.shape[0] % k or w.shape[1] % k:
            continue
        r, c = w.shape[0] // k, w.shape[1] // k
        mask = np.kron(np.eye(k, dtype=bool), np.ones((r, c), dtype=bool))
        if not np.any(w[~mask]):
            return k
    return 1
