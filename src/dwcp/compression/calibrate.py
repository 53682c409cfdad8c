"""Per-host codec speeds: every option timed on one fixed reference array, stored as JSON.

Codec speed depends on the CPU. The model never predicts absolute speeds: it predicts an option's speed
on the request's data *relative to* that option's speed on the reference array, and the host's
calibration turns that back into bytes/s (Btune normalises its probe speed against a reference the same
way). A model trained on one host therefore serves on another after `dwcp compression calibrate` there.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dwcp.compression.codecs import KEYS, OPTIONS
from dwcp.compression.corpus import reference_data
from dwcp.compression.oracle import measure

FORMAT = "dwcp-compression-calibration/2"  # /2 added the pilot speed
ENV_PATH = "DWCP_COMPRESSION_CALIBRATION"


@dataclass(frozen=True, slots=True)
class Calibration:
    """Reference speeds per option (OPTIONS order, bytes/s; inf for `none`) measured on one host."""

    host: str
    created: float
    reference_sha256: str
    vc: np.ndarray
    vd: np.ndarray
    ratio: np.ndarray
    seconds: float
    pilot: float  # the host's pilot speed while calibrating (`oracle.Measurement.pilot`, fastest repeat)

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "host": self.host, "created": self.created, "seconds": round(self.seconds, 3),
            "reference_sha256": self.reference_sha256, "pilot_bps": self.pilot,
            "options": {
                k: {"ratio": float(r), "compress_bps": _finite(c), "decompress_bps": _finite(d)}
                for k, r, c, d in zip(KEYS, self.ratio, self.vc, self.vd, strict=True)
            },
        }

    @classmethod
    def from_json(cls, doc: dict) -> Calibration:
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a calibration file (format {doc.get('format')!r}, expected {FORMAT!r})")
        opts = doc["options"]
        missing = [k for k in KEYS if k not in opts]
        if missing:
            raise ValueError(f"calibration lacks options {missing}; run `dwcp compression calibrate` again")

        def col(field: str) -> np.ndarray:
            return np.array([np.inf if opts[k][field] is None else float(opts[k][field]) for k in KEYS])

        return cls(doc["host"], float(doc["created"]), doc["reference_sha256"], col("compress_bps"),
                   col("decompress_bps"), np.array([float(opts[k]["ratio"]) for k in KEYS]), float(doc["seconds"]),
                   float(doc["pilot_bps"]))


def _finite(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def reference_sha256() -> str:
    return hashlib.sha256(reference_data()).hexdigest()


def run(min_total: float = 0.03, rounds: int = 3, repeats: int = 5) -> Calibration:
    """Time every option on the reference array, `repeats` times; keep each option's fastest (10-20 s here).

    One repeat is an oracle measurement with `rounds` interleaved timing turns per option (more, up to
    twice that, for a timing whose two fastest turns disagree), fastest sample kept. Repeating it matters
    more than longer turns: this VM runs in speed modes about 30% apart that switch over seconds (four
    back-to-back single calibrations on a quiet machine gave 0.88-1.42x one another per option, often fast
    for some options and slow for others in the same run), and the fastest over several seconds is the
    statistic that comes out the same run after run. Every speed the model predicts is scaled by these.
    The pilot block is timed in the same turns (`corpus.pilot_data()`): its fastest speed is the host speed every
    oracle measurement is rescaled to (`Measurement.at_speed`).
    """
    start = time.perf_counter()
    data = reference_data()
    runs = [measure(data, OPTIONS, min_total=min_total, rounds=rounds, max_rounds=2 * rounds)
            for _ in range(max(repeats, 1))]
    vc, vd = np.max([m.vc for m in runs], axis=0), np.max([m.vd for m in runs], axis=0)
    return Calibration(socket.gethostname(), time.time(), hashlib.sha256(data).hexdigest(), vc, vd, runs[0].ratio,
                       time.perf_counter() - start, max(m.pilot for m in runs))


def default_path(data_dir: Path | None = None) -> Path:
    """$DWCP_COMPRESSION_CALIBRATION, else `calibration-<host>.json` in data_dir (or ~/.cache/dwcp)."""
    if os.environ.get(ENV_PATH):
        return Path(os.environ[ENV_PATH])
    base = data_dir if data_dir is not None else Path.home() / ".cache" / "dwcp" / "compression"
    return base / f"calibration-{socket.gethostname()}.json"


def save(cal: Calibration, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cal.to_json(), indent=2))
    tmp.replace(path)  # atomic: a second instance starting at the same time never reads half a file


def load(path: Path) -> Calibration:
    return Calibration.from_json(json.loads(path.read_text()))


def load_or_run(path: Path) -> tuple[Calibration, bool]:
    """The stored calibration, or a fresh one (saved) when missing or unreadable; True when it ran."""
    try:
        return load(path), False
    except (OSError, ValueError, KeyError):
        cal = run()
        save(cal, path)
        return cal, True
