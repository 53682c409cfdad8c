"""Features of a payload from a sample of it: byte statistics (numpy) and two fast probe compressions.

Everything is computed on a probe region of at most 16 KiB (four 4 KiB blocks spread over the sample, so
a mixture's parts are all seen), which keeps extraction in the tens of microseconds; for a model that asks for
it, a sample that is all of a small chunk is read whole instead (`Extractor.whole_up_to`).

Every feature is a property of the bytes alone: the same sample gives the same vector on any host, under
any load. The probes' *timings* were features until they were measured to track the machine's state
more than the data: one lz4 or zstd-1 call on 16 KiB ran ~3x slower right after a large compression
(cold caches) than in a loop (mean log difference 1.1, s.d. 0.6, 24 payloads), and a model without them
scored as well on held-out data (docs/compression.md, "Features"). Speed still follows the host: the
model predicts each option's speed relative to the host's calibration.
"""

from __future__ import annotations

import math

import lz4.block
import numpy as np
import zstandard

PROBE_BLOCK = 4096
PROBE_BLOCKS = 4
# log2 of the largest chunk in the training data (1 MiB): a larger chunk is read as this one. Per-byte speeds
# stop changing with the chunk long before (tens of KiB); only the strong codecs' long windows could still
# find more matches (docs/compression.md, "Chunks").
MAX_LOG_CHUNK = 20.0

# The payload enters only as the chunk its bytes are compressed in (`costmodel.chunk_of`): what the data is
# like per chunk does not depend on how many chunks follow, so the payload size is no feature.
FEATURE_NAMES: tuple[str, ...] = (
    "log2_chunk", "log2_sample", "log2_chunk_over_sample", "entropy", "zero_share", "ascii_share", "high_share",
    "distinct_share", "top_share", "repeat1", "repeat2", "repeat4", "repeat8", "zero_word_share",
    "zero_block_share", "lz4_ratio", "zstd1_ratio",
)
N_FEATURES = len(FEATURE_NAMES)
# Artifacts trained before chunks existed (mlp-bc45da71d8 and earlier) named the first three inputs after the
# payload size; their training payloads were each measured whole, i.e. as one chunk of that size, so the
# chunk is the value they were trained on and they read the same vector.
LEGACY_FEATURE_NAMES = ("log2_size", "log2_sample", "log2_size_over_sample", *FEATURE_NAMES[3:])

_ASCII = np.zeros(256, np.int64)  # 1 for printable ASCII and tab, newline, return: a dot with the counts sums them
_ASCII[32:127] = 1
_ASCII[[9, 10, 13]] = 1
# Eight booleans that are all True, read as one little- or big-endian uint64.
_ALL_EIGHT = 0x0101010101010101


def make_sample(payload: bytes, limit: int = 65536, blocks: int = 16) -> bytes:
    """What a client sends for a payload: all of it when it fits, else `blocks` evenly spread slices."""
    if len(payload) <= limit:
        return payload
    step = limit // blocks
    starts = np.linspace(0, len(payload) - step, blocks).astype(int)
    return b"".join(payload[s:s + step] for s in starts)


def probe_region(sample: bytes) -> bytes:
    if len(sample) <= PROBE_BLOCK * PROBE_BLOCKS:
        return sample
    starts = np.linspace(0, len(sample) - PROBE_BLOCK, PROBE_BLOCKS).astype(int)
    return b"".join(sample[s:s + PROBE_BLOCK] for s in starts)


class Extractor:
    """Holds the zstd-1 probe context: one Extractor per thread (zstd contexts are not thread-safe).

    `whole_up_to` (bytes, 0: never): a sample that is all of its chunk (sample <= chunk <= whole_up_to) is read
    whole instead of through the 16 KiB probe region. For such a chunk the sample is exactly the bytes the
    chunk's ratio and speeds are measured on, and on 16-64 KiB samples of paged or long-match data the region
    missed most of it: the model's ratio was off by s.d. 0.39 (log) there against 0.06-0.08 on samples the region
    covers (docs/compression.md, "Session 10"). A model asks for it (`model.SmallChunks.whole_sample`); reading a
    64 KiB sample whole costs ~125 us more than the region.
    """

    def __init__(self, whole_up_to: int = 0) -> None:
        self._zstd1 = zstandard.ZstdCompressor(level=1, write_content_size=False, write_checksum=False)
        self.whole_up_to = whole_up_to

    def __call__(self, sample: bytes, chunk: int, out: np.ndarray | None = None) -> np.ndarray:
        """The feature vector (FEATURE_NAMES order) for one sample of a payload sent in chunks of `chunk` bytes
        (min(chunk_bytes, size_bytes): `costmodel.chunk_of`)."""
        row = np.empty(N_FEATURES, np.float64) if out is None else out
        region = sample if len(sample) <= chunk <= self.whole_up_to else probe_region(sample)
        n = len(region)
        if n == 0:
            row[:] = 0.0
            row[0] = min(math.log2(max(chunk, 1)), MAX_LOG_CHUNK)
            return row
        a = np.frombuffer(region, np.uint8)
        counts = np.bincount(a, minlength=256)
        p = counts[counts > 0] / n
        lz4_len = len(lz4.block.compress(region, store_size=False))
        zstd_len = len(self._zstd1.compress(region))
        log_chunk = min(math.log2(max(chunk, 1)), MAX_LOG_CHUNK)
        log_sample = math.log2(max(len(sample), 1))
        row[0] = log_chunk
        row[1] = log_sample
        row[2] = max(log_chunk - log_sample, 0.0)
        row[3] = float(-(p * np.log2(p)).sum())
        row[4] = counts[0] / n
        row[5] = (counts @ _ASCII) / n
        row[6] = counts[128:].sum() / n
        row[7] = len(p) / 256.0
        row[8] = counts.max() / n
        for j, lag in enumerate((1, 2, 4, 8)):
            row[9 + j] = np.count_nonzero(a[lag:] == a[:-lag]) / n if n > lag else 0.0
        if counts[0] < 8:  # no all-zero 8-byte word can exist (most text and compressed data): both shares are 0
            row[13] = row[14] = 0.0
        else:
            zw = a[: n - n % 8].view(np.uint64) == 0
            nb = len(zw) // 8
            # count_nonzero / len, not .mean(): the same float (an exact count over n, one rounding), 4x less overhead.
            row[13] = np.count_nonzero(zw) / len(zw)
            # A 64-byte block is zero when its eight word flags are all True: the flags read as one uint64.
            row[14] = np.count_nonzero(zw[: nb * 8].view(np.uint64) == _ALL_EIGHT) / nb if nb else 0.0
        row[15] = lz4_len / n
        row[16] = zstd_len / n
        return row

    def many(self, samples: list[bytes], chunks: list[int]) -> np.ndarray:
        out = np.empty((len(samples), N_FEATURES), np.float64)
        for i, (s, chunk) in enumerate(zip(samples, chunks, strict=True)):
            self(s, chunk, out[i])
        return out


def chunk_at_most(x: np.ndarray, log_chunk: float) -> np.ndarray:
    """Feature rows `x` with any chunk larger than 2^`log_chunk` read as that chunk (a copy then; `x` itself when
    no row is larger): the chunk and the chunk-over-sample inputs, as `Extractor` would compute them."""
    over = x[:, 0] > log_chunk
    if not over.any():
        return x
    x = x.copy()
    if over.all():  # slices, not a mask: the one-request call
        x[:, 0] = log_chunk
        x[:, 2] = np.maximum(log_chunk - x[:, 1], 0.0)
        return x
    x[over, 0] = log_chunk
    x[over, 2] = np.maximum(log_chunk - x[over, 1], 0.0)
    return x
