"""The selector's stand-in model when no trained artifact loads: calibration ratios scaled by the probe.

It keeps a fresh checkout (or a broken artifact) serving sensible answers instead of refusing requests:
each option's ratio is its ratio on the calibration reference array, scaled by how much better or worse
the request's zstd-1 probe compresses than the reference did; speeds are the reference speeds. The
service reports itself `degraded` while it runs on this.
"""

from __future__ import annotations

import numpy as np

from dwcp.compression.calibrate import Calibration
from dwcp.compression.codecs import CODED, KEYS
from dwcp.compression.features import FEATURE_NAMES

# Incompressible data grows a little under every codec; a predicted ratio above this is noise.
MAX_RATIO = 1.01


class ProbeModel:
    """Duck-types `Model.predict`: (log ratio, log relative compress speed, log relative decompress speed)."""

    version = "probe-fallback"

    def __init__(self, cal: Calibration) -> None:
        self.features = FEATURE_NAMES
        self.options = tuple(o.key for o in CODED)
        self.training: dict = {}
        self.reference_sha256 = cal.reference_sha256
        self._ref_log_ratio = np.log(cal.ratio[1:])
        self._ref_zstd1 = float(cal.ratio[KEYS.index("zstd-1")])
        self._probe = FEATURE_NAMES.index("zstd1_ratio")

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.atleast_2d(x)
        probe = np.clip(x[:, self._probe], 1e-4, MAX_RATIO)
        log_r = np.minimum(self._ref_log_ratio + np.log(probe / self._ref_zstd1)[:, None], np.log(MAX_RATIO))
        zeros = np.zeros_like(log_r)
        return log_r, zeros, zeros
