"""What each codec costs a running transfer's pipeline, measured on its chunks, and the codec that is fastest.

The selector's cost model (`compression.costmodel`) prices a pipelined transfer at the pace of its slowest
stage, max(1/Vc, r/B, 1/Vd), with Vc the single-thread compress speed. Once the link is the slowest stage, the
CPU a codec burns is free in that model: zstd-9 beats zstd-3 on a 100 Mbit/s link by its 1-2% better ratio,
whatever its 2.5x CPU. On a manager the stages are not separate machines. The sender's streams compress,
checksum and encrypt on the same cores, the receiver's decrypt, decode, hash and write on its own (or, with
both ends on one host, the same ones), and the host is shared with other work. So the sender prices each
candidate codec x per raw byte as

    T(x) = max(r_x / B, cpu(x) / cores, disk)

    cpu(x) = (comp_x + tx_rest) + (dec_x + rx_rest)        both ends on one host (same kernel boot id)
    cpu(x) = max(comp_x + tx_rest, dec_x + rx_rest)        otherwise (each end on its own cores)
    cores  = min(CPUs, streams x share)
    disk   = the receiver's wall time per raw byte making a chunk durable / streams (the same for every codec)

all measured here: comp_x is the sender's thread CPU per raw byte compressing with x, tx_rest its CPU per raw
byte for the rest of a chunk (read, checksum, TLS, framing); dec_x and rx_rest the same at the receiver, which
reports its thread CPU for each chunk in the ACK; share is the CPU a sender stream thread gets while it
computes (thread CPU / wall time of reading and compressing a chunk), so a host busy with other work counts
fewer cores. r_x is the wire/raw ratio on this transfer's own chunks. A codec not sent yet is priced from
the chunk's 16 KiB sample (`on_sample`: its ratio and thread CPU compressing and decoding it), scaled by how a
codec that was measured compares with its own sample figures (a fraction of a ms per transfer). The codec with
the smallest T on the ladder (`LADDER`: none, lz4, zstd-1, zstd-3, zstd-9) is sent, starting from the selector's
pick; a tie goes to the lighter one, and a heavier codec than the pick must be UP_MARGIN faster with its own CPU
taken UP_CPU_SAFETY times over, so the pricing steps up only where its figures say the link, not the CPU, sets the
pace (a `none` pick at 1000 Mbit/s on a host
with CPU to spare: session 6 measured zstd-3 1.17x faster than none there), not on a sample's 1-2% better ratio.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dwcp.manager import chunks
from dwcp.manager.metrics import ManagerMetrics
from dwcp.manager.store import boot_id

EWMA = 0.2  # weight of the newest chunk
# Every codec the pricing may choose, lightest first: a pick may step down to a lighter one or up to a heavier
# one (zstd-19 and brotli cost 20-500x zstd-3's CPU: the pricing never steps up to them, only keeps them).
LADDER = ("none", "lz4", "zstd-1", "zstd-3", "zstd-9")
UP_MARGIN = 0.05  # a codec heavier than the pick must move a byte this much sooner (its ratio is an estimate)...
UP_CPU_SAFETY = 1.5  # ...with its CPU taken this many times over (its CPU is an estimate too, often a sample's)
# A codec lighter than the pick, where the link sets the pick's pace, must move a byte this much sooner: there the
# two are told apart by their ratios alone, and the ratios are a 16 KiB sample's, in which zstd-1 and zstd-3 read
# within 1% of each other while on whole 1.6 MiB chunks zstd-1 sent 27% more bytes (session 8, 100 Mbit/s medium
# bucket, binary family: 0.565 vs 0.446 of raw; text 0.313 vs 0.290).
DOWN_MARGIN = 0.05
# Payloads shorter than this on the wire (uncompressed) are not priced for a step up: compressing a 16 KiB sample
# with the heavier codecs costs up to ~1 ms of CPU (zstd-9 most of it), 5% of this.
STEP_UP_MIN_WIRE_S = 0.02
MIN_TIMED_BYTES = 64 * 1024  # smaller chunks' CPU is mostly per-chunk overhead, not per byte
MIN_TIMED_WALL_S = 1e-3  # shorter CPU sections say nothing about the CPU share (a timeslice is ~4 ms)


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - EWMA) * old + EWMA * new


def same_kernel(state: dict) -> bool:
    """The receiver's STATE names this kernel's boot id: both ends run on one host's CPUs."""
    return bool(state.get("boot")) and state["boot"] == boot_id()


@dataclass(frozen=True, slots=True)
class Sampled:
    """One codec on a chunk's sample: wire/raw ratio, thread CPU s per byte compressing and decoding."""
    ratio: float
    comp: float
    dec: float


def on_sample(sample: bytes, codecs: tuple[str, ...], known: dict[str, Sampled] | None = None) -> dict[str, Sampled]:
    """Each codec on `sample` (`none`: 1, 0, 0); `known` keeps them for the next call on the same sample."""
    known = {} if known is None else known
    for key in codecs:
        if key in known:
            continue
        if key == "none" or not sample:
            known[key] = Sampled(1.0, 0.0, 0.0)
            continue
        c0 = time.thread_time()
        packed = chunks.encode(sample, key)
        c1 = time.thread_time()
        chunks.decode(packed, key, len(sample), None)
        c2 = time.thread_time()
        known[key] = Sampled(len(packed) / len(sample), (c1 - c0) / len(sample), (c2 - c1) / len(sample))
    return {k: known[k] for k in codecs}


class PipelineCosts:
    """The sender's running figures for one peer's pipeline (every transfer to it adds to them)."""

    def __init__(self, streams: int, cpus: int | None = None) -> None:
        self.streams = streams
        self.cpus = cpus or os.cpu_count() or 1
        self.comp: dict[str, float] = {}  # codec -> sender CPU s per raw byte compressing
        self.dec: dict[str, float] = {}  # codec -> receiver CPU s per raw byte decoding
        self.tx_rest: float | None = None  # sender CPU s per raw byte besides compressing
        self.rx_rest: float | None = None  # receiver CPU s per raw byte besides decoding
        self.rx_io: float | None = None  # receiver wall s per raw byte making a chunk durable, one stream
        self.share: float | None = None  # CPU share of a sender stream thread while it computes
        self.same_host = False  # the peer answered with this kernel's boot id: both ends share these CPUs
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
        """The receiver's ACK for one chunk: `cpu` its thread CPU for the chunk, `dcpu` the decoding part, `io`
        the wall time its write and (group) fdatasync took."""
        cpu, dcpu = meta.get("cpu"), meta.get("dcpu")
        if raw_len < MIN_TIMED_BYTES or not isinstance(cpu, int | float) or not isinstance(dcpu, int | float):
            return  # a receiver that does not report (an older one)
        with self._lock:
            if codec != "none":
                self.dec[codec] = _ewma(self.dec.get(codec), dcpu / raw_len)
            self.rx_rest = _ewma(self.rx_rest, max(0.0, cpu - dcpu) / raw_len)
            io = meta.get("io")
            if isinstance(io, int | float):
                self.rx_io = _ewma(self.rx_io, io / raw_len)

    def export(self, metrics: ManagerMetrics, peer: str) -> None:
        """The figures as gauges (`dwcp_transfer_pipeline_*`), so an operator sees why a codec was stepped down."""
        parts = [("sender", k, v) for k, v in self.comp.items()] + [("receiver", k, v) for k, v in self.dec.items()]
        parts += [(side, part, v) for side, part, v in (("sender", "rest", self.tx_rest),
                                                         ("receiver", "rest", self.rx_rest),
                                                         ("receiver", "durable_write_wall", self.rx_io)) if v]
        for side, part, value in parts:
            metrics.pipeline_cpu.labels(peer, side, part).set(value)
        if self.share is not None:
            metrics.pipeline_share.labels(peer).set(self.share)

    def ready(self) -> bool:
        """Both ends' figures are in (a chunk of at least MIN_TIMED_BYTES was sent and acknowledged)."""
        return self.tx_rest is not None and self.rx_rest is not None

    def cores(self) -> float:
        """The CPU the pipeline gets: its streams' threads at the share each gets (both ends' threads on one
        host count once: they are not all runnable at once, and the measured transfers ran slower than
        counting them twice predicts)."""
        return max(1e-3, min(self.cpus, self.streams * (self.share or 1.0)))

    def codec_cpu(self, codec: str, sampled: dict[str, Sampled] | None = None) -> tuple[float, float] | None:
        """(compress, decompress) CPU s per raw byte of `codec`: measured, else its figures on the sample scaled
        by the measured/sample CPU of the codecs measured here (None when neither is known)."""
        if codec == "none":
            return 0.0, 0.0
        comp, dec = self.comp.get(codec), self.dec.get(codec)
        if comp is not None and dec is not None:
            return comp, dec
        if not sampled or codec not in sampled:
            return None
        return (comp if comp is not None else sampled[codec].comp * _scale(self.comp, sampled, "comp"),
                dec if dec is not None else sampled[codec].dec * _scale(self.dec, sampled, "dec"))

    def seconds_per_byte(self, codec: str, ratio: float, bandwidth: float, same_host: bool,
                         sampled: dict[str, Sampled] | None = None, cpu_factor: float = 1.0) -> float | None:
        """T(codec) in seconds per raw byte, or None while a figure it needs is unknown; `cpu_factor` scales the
        codec's own compress and decode CPU (the step-up's safety)."""
        cpu = self.codec_cpu(codec, sampled)
        if cpu is None or self.tx_rest is None or self.rx_rest is None:
            return None
        tx, rx = cpu_factor * cpu[0] + self.tx_rest, cpu_factor * cpu[1] + self.rx_rest
        work = tx + rx if same_host else max(tx, rx)
        disk = (self.rx_io or 0.0) / self.streams  # the streams' chunks are made durable side by side
        return max(ratio / bandwidth, work / self.cores(), disk)

    def fastest(self, pick: str, ratios: dict[str, float], bandwidth: float,
                sampled: dict[str, Sampled] | None = None, priced_out: dict[str, float] | None = None,
                chunk_bytes: int = 0, remaining_bytes: int = 0,
                sample_up: Callable[[str], float | None] | None = None) -> str:
        """The selector's `pick`, a lighter codec or a heavier one on the LADDER, whichever moves a raw byte
        soonest. `ratios`: each candidate's wire/raw ratio (measured, or estimated by the caller); a candidate
        without one is skipped, and the pick is kept while its own figures are missing. A lighter codec must be
        DOWN_MARGIN faster than the pick where the link sets the pick's pace (a tie otherwise goes to the
        lighter). A heavier codec must be UP_MARGIN faster than the best of the pick and the lighter ones, and
        (with `chunk_bytes`) save over the `remaining_bytes` of the transfer at least what compressing one chunk
        with it costs beyond the best's: the time that chunk waits before its first byte leaves (a one-chunk
        object pays it whole; the pipelined price above does not see it). `priced_out` receives each priced
        candidate's T in seconds per raw byte (a heavier one's with its CPU taken UP_CPU_SAFETY times over).
        `sample_up(codec)`: a heavier codec's ratio when `ratios` has none, by compressing the chunk's sample (which
        adds its figures to `sampled`); called only for a codec `cannot_pay` does not rule out first (zstd-9 on a
        16 KiB sample costs 0.06-0.55 ms of CPU, before the chunk's first byte)."""
        if pick not in ratios and pick != "none":
            return pick
        priced: dict[str, float] = {}  # the pick and the lighter ones
        up: dict[str, float] = {}  # the heavier ones
        for k in candidates(pick, up=False):
            ratio = 1.0 if k == "none" else ratios.get(k)
            if ratio is None:
                continue
            t = self.seconds_per_byte(k, ratio, bandwidth, self.same_host, sampled)
            if t is not None:
                priced[k] = t
        best = pick
        if pick in priced:
            # the pick's pace is its wire time: a lighter codec is told from it by the (sample's) ratios alone
            link_bound = pick != "none" and priced[pick] <= ratios[pick] / bandwidth
            below = priced[pick] * (1 - DOWN_MARGIN) if link_bound else priced[pick]
            for k in candidates(pick)[1:]:  # lighter ones, lightest last: a tie goes to the lighter
                if k in priced and priced[k] <= below and priced[k] <= priced[best]:
                    best = k
            for k in candidates(pick)[len(candidates(pick, up=False)):]:  # the heavier ones
                ratio = ratios.get(k)
                if ratio is None and sample_up is not None \
                        and not self.cannot_pay(k, best, priced[best], chunk_bytes, remaining_bytes, sampled):
                    ratio = sample_up(k)
                if ratio is None:
                    continue
                # a heavier codec is priced with its CPU taken UP_CPU_SAFETY times over (a codec that is link-bound
                # only if its CPU estimate is right is not worth the risk: zstd-9 at 100 Mbit/s went 2.4x the CPU
                # for a 1.7% smaller wire), then it must still be UP_MARGIN faster
                t = self.seconds_per_byte(k, ratio, bandwidth, self.same_host, sampled, UP_CPU_SAFETY)
                if t is not None:
                    up[k] = t
        if priced_out is not None:
            priced_out.update(priced)
            priced_out.update(up)
        if pick not in priced:
            return pick
        if up:
            soonest = min(up, key=up.__getitem__)
            if up[soonest] < priced[best] * (1 - UP_MARGIN) and self._fills(soonest, best, priced[best] - up[soonest],
                                                                            chunk_bytes, remaining_bytes, sampled):
                best = soonest
        return best

    def none_sooner(self, pick: str, bandwidth: float) -> bool:
        """`none` moves a byte no later than `pick` would even if `pick` left nothing to send: priced with a ratio of
        0, `pick`'s measured CPU alone (no sample compressed) already takes as long as `none`'s wire and CPU. The CPU
        guard of an object decided without pricing (batch.DECIDE_MIN_WIRE_S): a host short of CPU sends raw."""
        if pick == "none" or pick not in self.comp or pick not in self.dec:
            return False
        least = self.seconds_per_byte(pick, 0.0, bandwidth, self.same_host)
        raw = self.seconds_per_byte("none", 1.0, bandwidth, self.same_host)
        return least is not None and raw is not None and raw <= least

    def cannot_pay(self, heavy: str, best: str, t_best: float, chunk_bytes: int, remaining_bytes: int,
                   sampled: dict[str, Sampled] | None) -> bool:
        """`heavy` would be refused whatever its ratio, so its sample need not be compressed: priced with a ratio of
        0 (no wire time at all) and the least CPU it can cost, it is still not UP_MARGIN faster than `best` (priced
        `t_best`), or (with `chunk_bytes`) what it could save cannot pay for compressing that chunk with it
        (`_fills`). Its least CPU is its own measured compress CPU, else that of the heaviest lighter codec with
        a figure (zstd's levels cost more CPU the higher they go: zstd-9 / zstd-3 / zstd-1 on the benchmark's
        families' samples 0.55 / 0.11 / 0.08 ms text, 0.056 / 0.021 / 0.018 random); decoding counts 0 unless
        measured. Session 9: where the CPU sets the pace (1000 Mbit/s), every 4 MiB object compressed its sample
        with zstd-3 and zstd-9 to find what this rules out."""
        if self.tx_rest is None or self.rx_rest is None:
            return False
        comp = self.comp.get(heavy)
        if comp is None:
            lighter = [c[0] for k in LADDER if heavier(heavy, k) and (c := self.codec_cpu(k, sampled)) is not None]
            if not lighter:
                return False
            comp = max(lighter)
        tx = UP_CPU_SAFETY * comp + self.tx_rest
        rx = UP_CPU_SAFETY * self.dec.get(heavy, 0.0) + self.rx_rest
        least = max((tx + rx if self.same_host else max(tx, rx)) / self.cores(), (self.rx_io or 0.0) / self.streams)
        if least >= t_best * (1 - UP_MARGIN):
            return True
        if chunk_bytes <= 0:
            return False
        best_cpu = self.codec_cpu(best, sampled)
        extra = (UP_CPU_SAFETY * comp - (best_cpu[0] if best_cpu else 0.0)) * chunk_bytes
        return (t_best - least) * max(remaining_bytes, chunk_bytes) < extra

    def _fills(self, heavy: str, light: str, saved_per_byte: float, chunk_bytes: int, remaining_bytes: int,
               sampled: dict[str, Sampled] | None) -> bool:
        """The step up from `light` to `heavy` saves, over the transfer's remaining bytes, at least the extra
        time one thread takes to compress a chunk with `heavy` (its CPU taken UP_CPU_SAFETY times over): the
        wait before that chunk's first byte, which a pipelined price does not see. Session 8, 100 Mbit/s medium
        bucket: a 1.6 MiB one-chunk object stepped up to zstd-9 for a 9% smaller wire (2 ms of wire time)
        spent 76 ms compressing and was the transfer's last to finish."""
        if chunk_bytes <= 0:
            return True
        heavy_cpu, light_cpu = self.codec_cpu(heavy, sampled), self.codec_cpu(light, sampled)
        if heavy_cpu is None or light_cpu is None:
            return False
        extra = (UP_CPU_SAFETY * heavy_cpu[0] - light_cpu[0]) * chunk_bytes
        return saved_per_byte * max(remaining_bytes, chunk_bytes) >= extra


def heavier(codec: str, than: str) -> bool:
    """`codec` is above `than` on the LADDER (a codec off the ladder, e.g. zstd-19, is above all of it)."""
    rank = {k: i for i, k in enumerate(LADDER)}
    return rank.get(codec, len(LADDER)) > rank.get(than, len(LADDER))


def candidates(pick: str, up: bool = True) -> tuple[str, ...]:
    """The codecs a chunk the selector gave `pick` may go in: the pick, the lighter ones on the LADDER (lighter
    first after it), then (`up`) the heavier ones up to the ladder's top (a pick above the ladder only steps
    down)."""
    lighter = [k for k in reversed(LADDER) if heavier(pick, k)]
    return (pick, *lighter, *([k for k in LADDER if heavier(k, pick)] if up else []))


def _scale(measured: dict[str, float], sampled: dict[str, Sampled], part: str) -> float:
    """How the measured CPU of codecs compares with their CPU on the sample (1 when none was measured)."""
    ratios = [v / getattr(sampled[k], part) for k, v in measured.items() if k in sampled and getattr(sampled[k], part)]
    return sum(ratios) / len(ratios) if ratios else 1.0
