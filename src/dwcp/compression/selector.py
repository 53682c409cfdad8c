"""The selector: features -> predicted ratio and speeds per option -> cost model -> cheapest option.

The model predicts data properties only; the link enters through the cost model, so links never seen in
training (any bandwidth, RTT, loss) are handled exactly the way the oracle would handle them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dwcp.compression.calibrate import Calibration
from dwcp.compression.codecs import CODED, OPTIONS, Option
from dwcp.compression.costmodel import effective_bandwidth, per_byte_cost
from dwcp.compression.fallback import ProbeModel
from dwcp.compression.features import FEATURE_NAMES, Extractor
from dwcp.compression.model import Model

DEFAULT_MODEL = Path(__file__).parent / "artifacts" / "selector.npz"


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    option: Option
    seconds: float


class Selector:
    def __init__(self, model: Model | ProbeModel, calibration: Calibration) -> None:
        if model.options != tuple(o.key for o in CODED):
            raise ValueError(f"model predicts {model.options}, this build offers {tuple(o.key for o in CODED)}")
        if tuple(model.features) != FEATURE_NAMES:
            raise ValueError(f"model reads features {tuple(model.features)}, this build extracts {FEATURE_NAMES}; "
                             "retrain it (`dwcp compression train`)")
        self.model = model
        self.calibration = calibration
        self.extract = Extractor()
        # properties() works on one (N, 3, options) block of logs: rows ratio, compress speed, decompress
        # speed; column 0 is `none` (ratio 1, infinite speeds), pinned there by its bounds. Keep a model that
        # extrapolates wildly (odd input) inside physical bounds: ratio in [1e-6, 1.5], speeds within a factor
        # e^8 (~3000) of the reference. No overflow, no zero or infinite time.
        k, inf = len(CODED), np.inf
        self._lo = np.array([[0.0] + [-13.8] * k, [inf] + [-8.0] * k, [inf] + [-8.0] * k])
        self._hi = np.array([[0.0] + [0.4] * k, [inf] + [8.0] * k, [inf] + [8.0] * k])
        self._log_ref = np.vstack([np.zeros(k + 1), np.log(calibration.vc), np.log(calibration.vd)])
        self._log_ref[1:, 0] = 0.0

    @property
    def version(self) -> str:
        return self.model.version

    def properties(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted ratio, compress and decompress bytes/s for every option (`none` included), (N, options).

        exp(clip(log) + log reference) on one block: a handful of numpy calls whatever N is, since at one row
        per request numpy's per-call overhead, not the arithmetic, is the cost.
        """
        log_r, log_vc, log_vd = self.model.predict(x)
        e = np.zeros((log_r.shape[0], 3, self._lo.shape[1]))
        e[:, 0, 1:], e[:, 1, 1:], e[:, 2, 1:] = log_r, log_vc, log_vd
        # maximum then minimum is np.clip (same values, ~half its call overhead).
        np.maximum(e, self._lo, out=e)
        np.minimum(e, self._hi, out=e)
        e += self._log_ref
        np.exp(e, out=e)
        return e[:, 0], e[:, 1], e[:, 2]

    def costs(self, x: np.ndarray, size, bandwidth_bps, rtt_s, loss) -> np.ndarray:
        """Predicted end-to-end seconds of each option, (N, options)."""
        ratio, vc, vd = self.properties(x)
        b_eff = _column(effective_bandwidth(bandwidth_bps, rtt_s, loss))
        return _column(rtt_s) / 2.0 + _column(size) * per_byte_cost(ratio, vc, vd, b_eff)

    def choose_features(self, x: np.ndarray, size, bandwidth_bps, rtt_s, loss) -> tuple[np.ndarray, np.ndarray]:
        """(chosen option index, its predicted seconds) per row of features."""
        t = self.costs(x, size, bandwidth_bps, rtt_s, loss)
        return t.argmin(axis=1), t.min(axis=1)

    def choose(self, sample: bytes, size: int, bandwidth_mbps: float, rtt_ms: float, loss: float = 0.0) -> Choice:
        x = self.extract(sample, size)
        idx, secs = self.choose_features(x[None, :], size, bandwidth_mbps * 125_000.0, rtt_ms / 1e3, loss)
        return Choice(int(idx[0]), OPTIONS[int(idx[0])], float(secs[0]))


def _column(values) -> np.ndarray:
    """Per-request values (a scalar or shape (N,)) as a column, (N, 1), to broadcast over the options axis."""
    return np.asarray(values, float).reshape(-1, 1)
