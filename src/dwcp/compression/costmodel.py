"""The one cost model: end-to-end seconds to compress, send and decompress a payload over a WAN link.

A payload of S bytes goes through in chunks of E = min(chunk, S) bytes (the DWCP Manager's pipelined
chunks), each compressed, sent and decompressed; the stages overlap across chunks, so after the first
chunk has gone through all three the slowest stage sets the pace:

    t = RTT/2 + E * (1/Vc + r/B_eff + 1/Vd) + (S - E) * max(1/Vc, r/B_eff, 1/Vd)

the pipeline formula for S/E chunks through three stages (exact when E divides S). A payload that fits in
one chunk (S <= chunk) is compressed, then sent, then decompressed: the sum. r is the option's
compressed/original ratio, Vc and Vd its single-thread compress and decompress speeds, all measured on
chunks of E bytes of this data (bytes of original per second; infinite for `none`). B_eff is the link's
bandwidth B, capped with loss p by Mathis et al.'s TCP throughput bound for four parallel streams:
4 * 1.22 * MSS / (RTT * sqrt(p)).

The payload size, the chunk and the link enter the selector only here; the model predicts r, Vc and Vd.
Training labels, the oracle, the selector and the docs all use these functions; nothing else may. The
API's units (Mbit/s, ms) are converted here too (`Link`, `bytes_per_second`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MSS_BYTES = 1460
MATHIS_C = 1.22
STREAMS = 4
# The chunk a payload is compressed in when the caller does not say: the DWCP Manager's default chunk size
# (issue 14: chunks of 1-16 MiB chosen from the link; 1 MiB when it has no better figure), and the default of
# `chunk_bytes` in the selector's API. Written once here so the manager and the selector agree.
DEFAULT_CHUNK_BYTES = 1 << 20
BYTES_PER_MBIT = 125_000.0  # 1 Mbit/s = 10^6 bits/s = 125,000 bytes/s


def bytes_per_second(mbps):
    """Mbit/s (the API's unit) to bytes/s (the cost model's); floats and numpy arrays alike."""
    return mbps * BYTES_PER_MBIT


def chunk_of(size, chunk=DEFAULT_CHUNK_BYTES):
    """E: the bytes compressed as one unit, the chunk or the whole payload when it is smaller."""
    return np.minimum(size, chunk)


@dataclass(frozen=True, slots=True)
class Link:
    bandwidth_mbps: float
    rtt_ms: float
    loss_rate: float = 0.0

    @property
    def bandwidth_bps(self) -> float:
        """Bytes per second (the API speaks Mbit/s)."""
        return bytes_per_second(self.bandwidth_mbps)

    @property
    def rtt_s(self) -> float:
        return self.rtt_ms / 1e3

    @property
    def effective_bps(self) -> float:
        return float(effective_bandwidth(self.bandwidth_bps, self.rtt_s, self.loss_rate))


def effective_bandwidth(bandwidth_bps, rtt_s, loss):
    """B_eff in bytes/s; works on floats and numpy arrays alike."""
    if type(bandwidth_bps) is float and type(rtt_s) is float and type(loss) is float:
        # One request (the service's hot path): the same arithmetic without numpy's per-call overhead.
        if loss > 0 and rtt_s > 0:
            return min(bandwidth_bps, STREAMS * MATHIS_C * MSS_BYTES / (rtt_s * math.sqrt(loss)))
        return bandwidth_bps
    bandwidth_bps, rtt_s, loss = np.asarray(bandwidth_bps, float), np.asarray(rtt_s, float), np.asarray(loss, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mathis = STREAMS * MATHIS_C * MSS_BYTES / (rtt_s * np.sqrt(loss))
    # No loss (or a zero RTT) means no Mathis cap: the link's own bandwidth rules.
    mathis = np.where((loss > 0) & (rtt_s > 0), mathis, np.inf)
    return np.minimum(bandwidth_bps, mathis)


def transfer_seconds(size, chunk, ratio, vc, vd, bandwidth_bps, rtt_s, loss=0.0):
    """t for each option (broadcast over arrays: options on the last axis, requests on the first).

    `size` and `chunk` are per request (scalars or shape (N,)); `ratio`, `vc`, `vd` per option, measured or
    predicted on chunks of min(chunk, size) bytes of the data.
    """
    if type(rtt_s) is float and type(size) is int and type(chunk) is int:
        # One request (the service's hot path): plain numbers against the options' arrays, the same arithmetic
        # as the broadcast below without its per-argument array conversions.
        b_eff = effective_bandwidth(bandwidth_bps, rtt_s, loss)
        return _pipeline(float(size), float(min(chunk, size)), ratio, vc, vd, b_eff, rtt_s)
    ratio = np.asarray(ratio, float)
    b_eff, rtt, size, chunk = (_per_request(x, ratio.ndim) for x in (
        effective_bandwidth(bandwidth_bps, rtt_s, loss), rtt_s, size, chunk))
    return _pipeline(size, np.minimum(chunk, size), ratio, np.asarray(vc, float), np.asarray(vd, float), b_eff, rtt)


def _pipeline(size, e, ratio, vc, vd, b_eff, rtt):
    """The formula: S/E chunks of E bytes through compress, send and decompress, pipelined."""
    compress, wire, decompress = 1.0 / vc, ratio / b_eff, 1.0 / vd
    slowest = np.maximum(np.maximum(compress, wire), decompress)
    return rtt / 2.0 + e * (compress + wire + decompress) + (size - e) * slowest


def _per_request(x, ndim: int) -> np.ndarray:
    # Per-request values (shape (N,)) gain a trailing axis so they broadcast over the options axis.
    x = np.asarray(x, float)
    return x.reshape(x.shape + (1,) * (ndim - x.ndim)) if 0 < x.ndim < ndim else x
