"""What each codec costs a running transfer's pipeline, measured on its chunks, and the codec that is fastest.

The selector's cost model (`compression.costmodel`) prices a pipelined transfer at the pace of its slowest
stage, max(1/Vc, r/B, 1/Vd), with Vc the single-thread compress speed. Once the link is the slowest stage, the
CPU a codec burns is free in that model: zstd-9 beats zstd-3 on a 100 Mbit/s link by its 1-2% better ratio,
whatever its 2.5x CPU. On a manager the stages are not separate machines. The sender's streams compress,
checksum and encrypt on the same cores, the receiver's decrypt, decode, hash and write on its own (or, with
both ends on one host, the same ones), and the host is shared with other work. So the sender prices each
candidate codec x per raw byte as

    T(x) = max(r_x / B, cpu(x) / cores)

    cpu(x) = (comp_x + tx_rest) + (dec_x + rx_rest)        both ends on one host (same kernel boot id)
    cpu(x) = max(comp_x + tx_rest, dec_x + rx_rest)        otherwise (each end on its own cores)
    cores  = min(CPUs, threads x share)

all measured here: comp_x is the sender's thread CPU per raw byte compressing with x, tx_rest its CPU per raw
byte for the rest of a chunk (read, checksum, TLS, framing); dec_x and rx_rest the same at the receiver, which
reports its thread CPU for each chunk in the ACK; share is the CPU a sender stream thread gets while it
computes (thread CPU / wall time of reading and compressing a chunk), so a host busy with other work counts
fewer cores. r_x is the wire/raw ratio on this transfer's own chunks, or, for a codec it has not sent yet,
its ratio on the chunk's 16 KiB sample (`plan.sample_ratios`) scaled by how a codec that was sent compares
with its sample. A codec not timed yet on this host is priced from its CPU on the calibration's reference
array (`corpus.reference_data`, timed once per process), scaled by how the codecs that were timed compare
with their reference figures. The codec with the smallest T among the selector's pick and the lighter ones
is sent; a tie goes to the lighter one.
"""

from __future__ import annotations

import os
import threading
import time

from dwcp.compression import corpus
from dwcp.compression.codecs import BY_KEY
from dwcp.manager.metrics import ManagerMetrics
from dwcp.manager.store import boot_id

EWMA = 0.2  # weight of the newest chunk
# Lighter and lighter codecs the pipeline may fall back to from the selector's pick.
LIGHTER = ("zstd-3", "zstd-1", "lz4", "none")
MIN_TIMED_BYTES = 64 * 1024  # smaller chunks' CPU is mostly per-chunk overhead, not per byte
MIN_TIMED_WALL_S = 1e-3  # shorter CPU sections say nothing about the CPU share (a timeslice is ~4 ms)


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - EWMA) * old + EWMA * new


def same_kernel(state: dict) -> bool:
    """The receiver's STATE names this kernel's boot id: both ends run on one host's CPUs."""
    return bool(state.get("boot")) and state["boot"] == boot_id()


def _reference_cpu() -> dict[str, tuple[float, float]]:
    """(compress, decompress) thread CPU seconds per byte of each lighter codec on the reference array."""
    data = corpus.reference_data()
    out = {}
    for key in LIGHTER[:-1]:
        compress, decompress = BY_KEY[key].make()
        c0 = time.thread_time()
        packed = compress(data)
        c1 = time.thread_time()
        decompress(packed)
        c2 = time.thread_time()
        out[key] = (max(c1 - c0, 1e-6) / len(data), max(c2 - c1, 1e-6) / len(data))
    return out


class PipelineCosts:
    """The sender's running figures for one peer's pipeline (every transfer to it adds to them)."""

    def __init__(self, streams: int, cpus: int | None = None) -> None:
        self.streams = streams
        self.cpus = cpus or os.cpu_count() or 1
        self.comp: dict[str, float] = {}  # codec -> sender CPU s per raw byte compressing
        self.dec: dict[str, float] = {}  # codec -> receiver CPU s per raw byte decoding
        self.tx_rest: float | None = None  # sender CPU s per raw byte besides compressing
        self.rx_rest: float | None = None  # receiver CPU s per raw byte besides decoding
        self.share: float | None = None  # CPU share of a sender stream thread while it computes
        self.same_host = False  # the peer answered with this kernel's boot id: both ends share these CPUs
        self._reference: dict[str, tuple[float, float]] | None = None
        self._lock = threading.Lock()

    def sent(self, codec: str, raw_len: int, comp_cpu: float, rest_cpu: float, busy_cpu: float,
             busy_wall: float) -> None:
        """One chunk left: `comp_cpu` compressing it with `codec`, `rest_cpu` the sender's other CPU for it,
        `busy_cpu` / `busy_wall` the CPU and wall time of its CPU-bound part (read and compress)."""
        if raw_len < MIN_TIMED_BYTES:
            return
        with self._lock:
            if codec != "none":
                self.comp[codec] = _ewma(self.comp.get(codec), comp_cpu / raw_len)
            self.tx_rest = _ewma(self.tx_rest, rest_cpu / raw_len)
            if busy_wall >= MIN_TIMED_WALL_S:
                self.share = _ewma(self.share, min(1.0, busy_cpu / busy_wall))

    def acked(self, codec: str, raw_len: int, meta: dict) -> None:
        """The receiver's ACK for one chunk: `cpu` its thread CPU for the chunk, `dcpu` the decoding part."""
        cpu, dcpu = meta.get("cpu"), meta.get("dcpu")
        if raw_len < MIN_TIMED_BYTES or not isinstance(cpu, int | float) or not isinstance(dcpu, int | float):
            return  # a receiver that does not report (an older one)
        with self._lock:
            if codec != "none":
                self.dec[codec] = _ewma(self.dec.get(codec), dcpu / raw_len)
            self.rx_rest = _ewma(self.rx_rest, max(0.0, cpu - dcpu) / raw_len)

    def export(self, metrics: ManagerMetrics, peer: str) -> None:
        """The figures as gauges (`dwcp_transfer_pipeline_*`), so an operator sees why a codec was stepped down."""
        parts = [("sender", k, v) for k, v in self.comp.items()] + [("receiver", k, v) for k, v in self.dec.items()]
        parts += [(side, "rest", v) for side, v in (("sender", self.tx_rest), ("receiver", self.rx_rest)) if v]
        for side, part, value in parts:
            metrics.pipeline_cpu.labels(peer, side, part).set(value)
        if self.share is not None:
            metrics.pipeline_share.labels(peer).set(self.share)

    def ready(self) -> bool:
        """Both ends' figures are in (a chunk of at least MIN_TIMED_BYTES was sent and acknowledged)."""
        return self.tx_rest is not None and self.rx_rest is not None

    def cores(self, same_host: bool) -> float:
        threads = self.streams * (2 if same_host else 1)  # both ends' stream threads compete on one host
        return max(1e-3, min(self.cpus, threads * (self.share or 1.0)))

    def codec_cpu(self, codec: str) -> tuple[float, float] | None:
        """(compress, decompress) CPU s per raw byte of `codec`: measured, else scaled from the reference."""
        if codec == "none":
            return 0.0, 0.0
        comp, dec = self.comp.get(codec), self.dec.get(codec)
        if comp is not None and dec is not None:
            return comp, dec
        reference = self._reference_cpu()
        if codec not in reference:
            return None
        ref_comp, ref_dec = reference[codec]
        comp_scale = self._scale(self.comp, 0)
        dec_scale = self._scale(self.dec, 1)
        return (comp if comp is not None else ref_comp * comp_scale,
                dec if dec is not None else ref_dec * dec_scale)

    def _scale(self, measured: dict[str, float], side: int) -> float:
        """How this host's measured codec CPU compares with the reference figures (1 when none compare)."""
        reference = self._reference_cpu()
        ratios = [v / reference[k][side] for k, v in measured.items() if k in reference]
        return sum(ratios) / len(ratios) if ratios else 1.0

    def _reference_cpu(self) -> dict[str, tuple[float, float]]:
        if self._reference is None:
            self._reference = _reference_cpu()
        return self._reference

    def seconds_per_byte(self, codec: str, ratio: float, bandwidth: float, same_host: bool) -> float | None:
        """T(codec) in seconds per raw byte, or None while a figure it needs is unknown."""
        cpu = self.codec_cpu(codec)
        if cpu is None or self.tx_rest is None or self.rx_rest is None:
            return None
        tx, rx = cpu[0] + self.tx_rest, cpu[1] + self.rx_rest
        work = tx + rx if same_host else max(tx, rx)
        return max(ratio / bandwidth, work / self.cores(same_host))

    def fastest(self, pick: str, ratios: dict[str, float], bandwidth: float) -> str:
        """The selector's `pick` or a lighter codec, whichever moves a raw byte soonest. `ratios`: each
        candidate's wire/raw ratio (measured, or estimated by the caller); a candidate without one is skipped,
        and the pick is kept while its own figures are missing."""
        if pick == "none" or pick not in ratios:
            return pick
        best, best_t = pick, self.seconds_per_byte(pick, ratios[pick], bandwidth, self.same_host)
        if best_t is None:
            return pick
        start = LIGHTER.index(pick) + 1 if pick in LIGHTER else 0
        for lighter in LIGHTER[start:]:
            ratio = 1.0 if lighter == "none" else ratios.get(lighter)
            t = None if ratio is None else self.seconds_per_byte(lighter, ratio, bandwidth, self.same_host)
            if t is not None and t <= best_t:
                best, best_t = lighter, t
        return best
