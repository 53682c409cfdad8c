"""Chunks of an object: their size from the link, a codec each, and zstd deltas against an earlier version.

A chunk travels as `codec` + encoded bytes. `codec` is a compression option key (`none`, `lz4`, `zstd-3`,
... from `dwcp.compression.codecs`) or `delta`: zstd with the receiver's earlier version of the object as
a prefix (what `zstd --patch-from` does), with long-distance matching. The prefix is a window of the old
version around the chunk's offset (`DELTA_REACH` chunks either side), so a delta finds edits and moves
within that reach while the memory per chunk stays bounded.

python-zstandard cannot compress against a prefix (its raw-content dictionaries stop finding matches past
a few MiB), so the compressing side calls libzstd's `ZSTD_CCtx_refPrefix` through ctypes; a prefix and a
raw-content dictionary are the same thing to the decoder, so python-zstandard decompresses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path

import lz4.frame
import xxhash

from dwcp.compression.codecs import BY_KEY

DELTA = "delta"
DELTA_LEVEL = 3
DELTA_REACH = 2  # chunks of the old version either side of the chunk's own offset
DELTA_WINDOW_LOG = 28  # must cover the prefix plus the chunk: (2 * reach + 1) chunks of at most 16 MiB + 1
_local = threading.local()


def checksum(raw: bytes | bytearray | memoryview) -> str:
    """A chunk's checksum (CHUNK meta `xxh3`): xxh3-128 of its raw bytes, ~30x cheaper than sha256. It catches
    a chunk damaged between the sender's file and the receiver's (decoding, memory, a bug: TLS already
    guards the wire); the whole object's sha256, checked before it is published, is the cryptographic proof."""
    return xxhash.xxh3_128_hexdigest(raw)


def chunk_size_for(bandwidth_bps: float | None, default: int, lo: int, hi: int, target_seconds: float) -> int:
    """A power of two near bandwidth x target_seconds (one chunk per ~target on the wire), within [lo, hi]."""
    if not bandwidth_bps or bandwidth_bps <= 0:
        return default
    want = int(bandwidth_bps * target_seconds)
    size = 1 << max(0, want.bit_length() - 1)
    return max(lo, min(hi, size))


def chunk_count(size: int, chunk_bytes: int) -> int:
    """An empty object is one empty chunk, so every transfer has something to acknowledge."""
    return max(1, -(-size // chunk_bytes))


SAMPLE_BYTES = 16 * 1024  # per chunk: enough for the selector's probes, small enough for a 16-chunk batch
SAMPLE_SLICES = 16


def sample(fd: int, offset: int, length: int, limit: int = SAMPLE_BYTES) -> bytes:
    """What the selector sees of a chunk: all of it when it fits, else `SAMPLE_SLICES` evenly spread slices
    (the shape of `compression.features.make_sample`), read straight from the file."""
    if length <= limit:
        return os.pread(fd, length, offset)
    step = limit // SAMPLE_SLICES
    starts = [offset + (length - step) * k // (SAMPLE_SLICES - 1) for k in range(SAMPLE_SLICES)]
    return b"".join(os.pread(fd, step, s) for s in starts)


def _codecs(key: str):
    cache = getattr(_local, "codecs", None)
    if cache is None:
        cache = _local.codecs = {}
    pair = cache.get(key)
    if pair is None:
        if key not in BY_KEY:
            raise ValueError(f"unknown codec {key!r}")
        pair = cache[key] = BY_KEY[key].make()
    return pair


def encode(raw: bytes | memoryview, codec: str) -> bytes | memoryview:
    """`raw` in `codec`. The codecs read any buffer, so a chunk mapped from the blob (or received into the
    connection's buffer) is compressed where it lies: a `bytes` copy first cost ~1 ms of CPU per 16 MiB."""
    if codec == "none":
        return raw
    return _codecs(codec)[0](raw)


def decode(data: bytes | bytearray | memoryview, codec: str, raw_len: int,
           base: bytes | None = None) -> bytes | bytearray | memoryview:
    """The chunk's raw bytes; ValueError when `data` is not what `codec` produced."""
    if codec == "none":
        return data
    try:
        if codec == DELTA:
            if base is None:
                raise ValueError("delta chunk without its base version")
            import zstandard

            dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            return zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=1 << DELTA_WINDOW_LOG) \
                .decompress(bytes(data), max_output_size=raw_len)
        if codec == "lz4":
            return lz4.frame.decompress(data)
        return _codecs(codec)[1](data)  # read where it was received: no copy (encode)
    except ValueError:
        raise
    except Exception as exc:  # each library has its own error type for corrupt input
        raise ValueError(f"{codec} decode failed: {exc}") from None


def base_window(path: Path, base_size: int, index: int, chunk_bytes: int) -> bytes:
    """The old version's bytes a delta of chunk `index` refers to; both sides compute the same window."""
    start = max(0, (index - DELTA_REACH) * chunk_bytes)
    end = min(base_size, (index + 1 + DELTA_REACH) * chunk_bytes)
    if end <= start:
        return b""
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


class _Zstd:
    """libzstd's compressor with a prefix (`--patch-from`), through ctypes."""

    _lib = None
    LEVEL, WINDOW_LOG, LDM = 100, 101, 160  # ZSTD_cParameter values from zstd.h

    @classmethod
    def lib(cls):
        if cls._lib is None:
            name = ctypes.util.find_library("zstd") or "libzstd.so.1"
            lib = ctypes.CDLL(name)
            lib.ZSTD_createCCtx.restype = ctypes.c_void_p
            lib.ZSTD_CCtx_reset.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.ZSTD_CCtx_setParameter.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            lib.ZSTD_CCtx_setParameter.restype = ctypes.c_size_t
            lib.ZSTD_CCtx_refPrefix.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
            lib.ZSTD_CCtx_refPrefix.restype = ctypes.c_size_t
            lib.ZSTD_compress2.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                                           ctypes.c_size_t]
            lib.ZSTD_compress2.restype = ctypes.c_size_t
            lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
            lib.ZSTD_getErrorName.argtypes = [ctypes.c_size_t]
            lib.ZSTD_getErrorName.restype = ctypes.c_char_p
            lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
            lib.ZSTD_compressBound.restype = ctypes.c_size_t
            cls._lib = lib
        return cls._lib

    @classmethod
    def check(cls, code: int) -> int:
        lib = cls.lib()
        if lib.ZSTD_isError(code):
            raise RuntimeError(f"libzstd: {lib.ZSTD_getErrorName(code).decode()}")
        return code


def delta_encode(raw: bytes, base: bytes) -> bytes:
    """zstd of `raw` with `base` as prefix, long-distance matching on (what `zstd --patch-from` does)."""
    lib = _Zstd.lib()
    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = _local.cctx = lib.ZSTD_createCCtx()
    lib.ZSTD_CCtx_reset(cctx, 2)  # session and parameters: the prefix is used for one frame only anyway
    for param, value in ((_Zstd.LEVEL, DELTA_LEVEL), (_Zstd.WINDOW_LOG, DELTA_WINDOW_LOG), (_Zstd.LDM, 1)):
        _Zstd.check(lib.ZSTD_CCtx_setParameter(cctx, param, value))
    _Zstd.check(lib.ZSTD_CCtx_refPrefix(cctx, base, len(base)))
    cap = lib.ZSTD_compressBound(len(raw))
    out = ctypes.create_string_buffer(cap)
    n = _Zstd.check(lib.ZSTD_compress2(cctx, out, cap, raw, len(raw)))
    return out.raw[:n]


PIECE_BYTES = 64 * 1024  # the local rule's probe: contiguous bytes from a chunk's middle


def piece(fd: int, offset: int, length: int, limit: int = PIECE_BYTES) -> bytes:
    """`limit` contiguous bytes from the middle of chunk [offset, offset + length): what the local rule probes.
    (The selector's sample is 16 slices of 1 KiB: matches further apart than a slice are gone from it, and the
    benchmark's LZ-like binary family, 0.54 with zstd-1 on whole 2 MiB chunks, looked incompressible in it.)"""
    n = min(limit, length)
    return os.pread(fd, n, offset + (length - n) // 2) if n > 0 else b""


def local_choice(probe: bytes, bandwidth_bps: float | None) -> str:
    """The codec when the selector cannot answer: skip incompressible data, else spend CPU as the link allows.

    zstd-1 on `probe` (a chunk's `piece`, ~0.1-0.2 ms for 64 KiB) says whether the data compresses at all: lz4,
    which this used before session 7, has no entropy stage and missed data that only zstd's finds (the benchmark's
    binary family: lz4 0.98, zstd-1 0.64 on the same 64 KiB). Above ~400 MB/s only lz4 keeps up with the wire,
    zstd-1 up to ~100 MB/s, zstd-3 below that.
    """
    if not probe:
        return "none"
    probe = probe[:PIECE_BYTES]
    ratio = len(_codecs("zstd-1")[0](bytes(probe))) / len(probe)
    if ratio > 0.9:
        return "none"
    return link_rule(bandwidth_bps)


def link_rule(bandwidth_bps: float | None) -> str:
    """The local rule's codec for compressible data on a link this fast (its bandwidth in bytes/s)."""
    bw = bandwidth_bps or 125e6
    if bw > 400e6:
        return "lz4"
    return "zstd-1" if bw > 100e6 else "zstd-3"
