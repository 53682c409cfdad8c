"""Per-host codec speeds: every option timed on one fixed reference array, stored as JSON.

Codec speed depends on the CPU. The model never predicts absolute speeds: it predicts an option's speed
on the request's data *relative to* that option's speed on the reference array, and the host's
calibration turns that back into bytes/s (Btune normalises its probe speed against a reference the same
way). A model trained on one host therefore serves on another after `dwcp compression calibrate` there.
"""

from __future__ import annotations

import functools
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

FORMAT = "dwcp-compression-calibration/3"  # /2 added the pilot speed, /3 the compress speeds per chunk size
FORMATS = ("dwcp-compression-calibration/2", FORMAT)  # a /2 file reads with no chunk speeds
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
    # Compress bytes/s per chunk size (rows: CHUNK_LOG2; columns: OPTIONS, inf for `none`) on `chunk_block()`;
    # None for a /2 file. Their shape (`chunk_shape`) is what the selector compares with the model's.
    chunk_vc: np.ndarray | None = None

    def chunk_shape(self) -> np.ndarray | None:
        """log(compress speed on chunks of each CHUNK_LOG2 size / the reference array's speed), (buckets, options);
        `none`'s column 0. How much slower than on the reference each option runs on small chunks, on this host."""
        if self.chunk_vc is None:
            return None
        shape = np.zeros_like(self.chunk_vc)
        shape[:, 1:] = np.log(self.chunk_vc[:, 1:] / self.vc[1:])
        return shape

    def to_json(self) -> dict:
        doc = {
            "format": FORMAT if self.chunk_vc is not None else FORMATS[0], "host": self.host,
            "created": self.created, "seconds": round(self.seconds, 3),
            "reference_sha256": self.reference_sha256, "pilot_bps": self.pilot,
            "options": {
                k: {"ratio": float(r), "compress_bps": _finite(c), "decompress_bps": _finite(d)}
                for k, r, c, d in zip(KEYS, self.ratio, self.vc, self.vd, strict=True)
            },
        }
        if self.chunk_vc is not None:
            doc["chunks"] = {"log2_chunks": list(CHUNK_LOG2), "block_sha256": chunk_block_sha256(),
                             "compress_bps": {k: [_finite(v) for v in col]
                                              for k, col in zip(KEYS, self.chunk_vc.T, strict=True)}}
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> Calibration:
        if doc.get("format") not in FORMATS:
            raise ValueError(f"not a calibration file (format {doc.get('format')!r}, expected {FORMAT!r})")
        opts = doc["options"]
        missing = [k for k in KEYS if k not in opts]
        if missing:
            raise ValueError(f"calibration lacks options {missing}; run `dwcp compression calibrate` again")

        def col(field: str) -> np.ndarray:
            return np.array([_unbounded(opts[k][field]) for k in KEYS])

        chunks, chunk_vc = doc.get("chunks"), None
        if doc["format"] == FORMAT:
            if chunks["log2_chunks"] != list(CHUNK_LOG2) or chunks["block_sha256"] != chunk_block_sha256():
                raise ValueError("calibration's chunk speeds were measured on other chunks; run it again")
            chunk_vc = np.array([[_unbounded(v) for v in chunks["compress_bps"][k]] for k in KEYS]).T
        return cls(doc["host"], float(doc["created"]), doc["reference_sha256"], col("compress_bps"),
                   col("decompress_bps"), np.array([float(opts[k]["ratio"]) for k in KEYS]), float(doc["seconds"]),
                   float(doc["pilot_bps"]), chunk_vc)


def _finite(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _unbounded(x: float | None) -> float:
    """The inverse of `_finite`: a stored speed, None for `none`'s unbounded one."""
    return np.inf if x is None else float(x)


def reference_sha256() -> str:
    return hashlib.sha256(reference_data()).hexdigest()


# log2 of the chunk sizes whose compress speeds a calibration measures: 1, 4, 16 and 64 KiB, the range of the
# model's small-chunk part (`model.SmallChunks`).
CHUNK_LOG2 = (10, 12, 14, 16)


def chunk_block() -> bytes:
    """The 64 KiB of the reference array the per-chunk speeds are timed on (text, then JSON logs)."""
    ref = reference_data()
    return ref[:32768] + ref[65536:98304]


@functools.cache
def chunk_block_sha256() -> str:
    return hashlib.sha256(chunk_block()).hexdigest()


def run(min_total: float = 0.03, rounds: int = 3, repeats: int = 5, chunk_repeats: int = 3) -> Calibration:
    """Time every option on the reference array, `repeats` times; keep each option's fastest (10-20 s here).
    Then the compress speeds on `chunk_block()` cut into chunks of each CHUNK_LOG2 size, `chunk_repeats` times
    each, fastest kept (another 13-17 s here; none with `chunk_repeats=0`).

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
    chunk_vc = None
    if chunk_repeats > 0:
        block = chunk_block()
        chunk_vc = np.array([np.max([measure(block, OPTIONS, min_total=min_total, rounds=rounds, max_rounds=2 * rounds,
                                             chunk=1 << b).vc for _ in range(chunk_repeats)], axis=0)
                             for b in CHUNK_LOG2])
    return Calibration(socket.gethostname(), time.time(), hashlib.sha256(data).hexdigest(), vc, vd, runs[0].ratio,
                       time.perf_counter() - start, max(m.pilot for m in runs), chunk_vc)


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


def load_or_run(path: Path, chunk_speeds: bool = False) -> tuple[Calibration, bool]:
    """The stored calibration, or a fresh one (saved) when missing or unreadable; True when it ran.

    `chunk_speeds`: the model being served compares per-chunk speeds (`selector.ChunkShift`), so a stored file
    without them (a /2 file, or one made for a model that did not need them) is run again with them. Otherwise
    they are not measured: they double a calibration's time (13-17 s more here) and nothing would read them."""
    try:
        cal = load(path)
        if cal.chunk_vc is not None or not chunk_speeds:
            return cal, False
    except (OSError, ValueError, KeyError):
        pass
    cal = run() if chunk_speeds else run(chunk_repeats=0)
    save(cal, path)
    return cal, True
