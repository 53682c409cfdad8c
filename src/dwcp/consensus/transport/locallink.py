"""A node's link to its own worker process: `u32 length | u8 kind | msgpack` over a socketpair.

The kinds are the indices of `bullshark.messages.LOCAL_MESSAGES`. The link never leaves the
machine (the socketpair is inherited by the child), so it carries no signatures.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgspec

from dwcp.consensus.bullshark.messages import LOCAL_MESSAGES

_HEAD = struct.Struct("!IB")
_KIND = {t: i for i, t in enumerate(LOCAL_MESSAGES)}
_DECODERS = [msgspec.msgpack.Decoder(t) for t in LOCAL_MESSAGES]
_encoder = msgspec.msgpack.Encoder()
MAX_LOCAL_MESSAGE = 64 * 1024 * 1024


def encode_local(message: Any) -> bytes:
    body = _encoder.encode(message)
    return _HEAD.pack(len(body), _KIND[type(message)]) + body


async def read_local(reader: asyncio.StreamReader) -> Any:
    """The next message (IncompleteReadError at EOF)."""
    length, kind = _HEAD.unpack(await reader.readexactly(_HEAD.size))
    if length > MAX_LOCAL_MESSAGE or kind >= len(_DECODERS):
        raise ValueError(f"bad local frame: kind {kind}, {length} bytes")
    return _DECODERS[kind].decode(await reader.readexactly(length))
