"""The registry of compression options the selector chooses from, on the real libraries.

An option is a codec plus a level. Codec objects that keep state (zstd contexts) are not thread-safe,
so callers ask for a fresh `Codec` pair per thread with `Option.make()` instead of sharing one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import brotli
import lz4.frame
import zstandard

Compress = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class Option:
    codec: str  # none | lz4 | zstd | brotli
    level: int | None

    @property
    def key(self) -> str:
        """Stable name used in model artifacts, calibration files and metric labels, e.g. `zstd-3`."""
        return self.codec if self.level is None else f"{self.codec}-{self.level}"

    def make(self) -> tuple[Compress, Compress]:
        """(compress, decompress) callables owned by the caller's thread."""
        if self.codec == "none":
            return bytes, bytes
        if self.codec == "lz4":
            # Frame format (with content size) so the output is self-describing, like the other codecs.
            return (lambda d: lz4.frame.compress(d, store_size=True)), lz4.frame.decompress
        if self.codec == "zstd":
            cctx, dctx = zstandard.ZstdCompressor(level=self.level), zstandard.ZstdDecompressor()
            return cctx.compress, dctx.decompress
        if self.codec == "brotli":
            quality = self.level
            return (lambda d: brotli.compress(d, quality=quality)), brotli.decompress
        raise ValueError(f"unknown codec {self.codec!r}")


# Ordered from cheapest to strongest; `none` is always first (index 0), it never costs CPU.
OPTIONS: tuple[Option, ...] = (
    Option("none", None),
    Option("lz4", None),
    Option("zstd", 1),
    Option("zstd", 3),
    Option("zstd", 9),
    Option("zstd", 19),
    Option("brotli", 1),
    Option("brotli", 11),
)
KEYS: tuple[str, ...] = tuple(o.key for o in OPTIONS)
BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}
# Options that do work, i.e. those whose ratio and speeds the model predicts.
CODED: tuple[Option, ...] = OPTIONS[1:]


def option(key: str) -> Option:
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown option {key!r}; known: {', '.join(KEYS)}") from None
