"""The selector: features -> predicted ratio and speeds per option -> cost model -> cheapest option.

The model predicts data properties only; the link enters through the cost model, so links never seen in
training (any bandwidth, RTT, loss) are handled exactly the way the oracle would handle them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dwcp.compression.calibrate import Calibration
from dwcp.compression.codecs import CODED, KEYS, OPTIONS, Option
from dwcp.compression.costmodel import effective_bandwidth, per_byte_cost
from dwcp.compression.fallback import ProbeModel
from dwcp.compression.features import Extractor
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
        self.model = model
        self.calibration = calibration
        self.extract = Extractor(calibration.vc[KEYS.index("lz4")])
        self._log_vc_ref = np.log(calibration.vc[1:])
        self._log_vd_ref = np.log(calibration.vd[1:])

    @property
    def version(self) -> str:
        return self.model.version

    def properties(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted ratio, compress and decompress bytes/s for every option (`none` included), (N, options)."""
        log_r, log_vc, log_vd = self.model.predict(x)
        # Keep a model that extrapolates wildly (odd input) inside physical bounds: ratio in [1e-6, 1.5],
        # speeds within a factor e^8 (~3000) of the reference. No overflow, no zero or infinite time.
        log_r = np.clip(log_r, -13.8, 0.4)
        log_vc, log_vd = np.clip(log_vc, -8.0, 8.0), np.clip(log_vd, -8.0, 8.0)
        n = log_r.shape[0]
        ones, inf = np.ones((n, 1)), np.full((n, 1), np.inf)
        ratio = np.hstack([ones, np.exp(log_r)])
        vc = np.hstack([inf, np.exp(log_vc + self._log_vc_ref)])
        vd = np.hstack([inf, np.exp(log_vd + self._log_vd_ref)])
        return ratio, vc, vd

    def costs(self, x: np.ndarray, size, bandwidth_bps, rtt_s, loss) -> np.ndarray:
        """Predicted end-to-end seconds of each option, (N, options)."""
        ratio, vc, vd = self.properties(x)
        b_eff = np.atleast_1d(effective_bandwidth(bandwidth_bps, rtt_s, loss))[:, None]
        size, rtt = np.atleast_1d(np.asarray(size, float))[:, None], np.atleast_1d(np.asarray(rtt_s, float))[:, None]
        return rtt / 2.0 + size * per_byte_cost(ratio, vc, vd, b_eff)

    def choose_features(self, x: np.ndarray, size, bandwidth_bps, rtt_s, loss) -> tuple[np.ndarray, np.ndarray]:
        """(chosen option index, its predicted seconds) per row of features."""
        t = self.costs(x, size, bandwidth_bps, rtt_s, loss)
        idx = t.argmin(axis=1)
        return idx, t[np.arange(len(idx)), idx]

    def choose(self, sample: bytes, size: int, bandwidth_mbps: float, rtt_ms: float, loss: float = 0.0) -> Choice:
        x = self.extract(sample, size)
        idx, secs = self.choose_features(x[None, :], size, bandwidth_mbps * 125_000.0, rtt_ms / 1e3, loss)
        return Choice(int(idx[0]), OPTIONS[int(idx[0])], float(secs[0]))
