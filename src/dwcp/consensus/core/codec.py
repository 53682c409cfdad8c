"""One versioned binary codec for every protocol: msgpack via msgspec, signed envelopes, size limits.

Envelope (what goes in a transport frame's payload):

    +------------+-------------+----------------+----------------------------+
    | version u8 | sender u32  | signature 64 B | payload: msgpack message   |
    +------------+-------------+----------------+----------------------------+

The signature covers `signing_bytes(sender, payload)`: a domain tag, the version, the sender and the
payload, so a signature cannot be replayed under another sender or codec version. Encoding is
deterministic (msgspec writes struct fields in order), so a certificate can store only signatures
and a verifier re-encodes the vote to check them.

Decoding never raises on peer bytes: `open()` returns `Opened` or `DecodeError(reason)`, where
reason is a metric label: too_large, truncated, bad_version, unknown_sender, bad_signature, malformed.

Lazy verification: `open(..., lazy=(Vote,))` returns messages of those types with `verified=False`
and their signature unchecked. Only a core that checks them itself asks for it (`lazy_messages` on
the core class; PBFT checks a vote when it would complete a quorum and never checks one that comes
after), so no message ever counts without a valid signature, and none is checked twice.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Union

import msgspec

from dwcp.consensus.core.crypto import SIGNATURE_SIZE, Signer, Verifier
from dwcp.consensus.core.messages import CORE_MESSAGES, Block, digest

VERSION = 1
MAX_MESSAGE_SIZE = 1024 * 1024  # matches the transport's CONSENSUS channel limit
_HEADER = struct.Struct("!BI")
HEADER_SIZE = _HEADER.size + SIGNATURE_SIZE
_DOMAIN = b"dwcp-msg"


@dataclass(frozen=True, slots=True)
class DecodeError:
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Opened:
    sender: int
    message: Any
    signature: bytes
    payload: bytes
    verified: bool = True  # False: a `lazy` type whose signature the caller must still check


_encoder = msgspec.msgpack.Encoder()


def encode(obj: Any) -> bytes:
    """Deterministic msgpack of any message or struct (also used for digests)."""
    return _encoder.encode(obj)


def block_digest(block: Block) -> bytes:
    return digest(encode(block))


def signing_bytes(sender: int, payload: bytes, version: int = VERSION) -> bytes:
    return _DOMAIN + _HEADER.pack(version, sender) + payload


def signed_by(verifier: Verifier, sender: int, message: Any, signature: bytes) -> bool:
    """Is `signature` `sender`'s envelope signature over the canonical encoding of `message`? What a
    core checks for a message it took unverified, and what a certificate holding it will be checked
    against, so a vote signed over non-canonical bytes is refused here rather than in a certificate."""
    return verifier.verify(sender, signing_bytes(sender, encode(message)), signature)


class Codec:
    """Encodes and decodes one protocol's message union (its own types plus the core ones)."""

    def __init__(self, types: Iterable[type], *, max_size: int = MAX_MESSAGE_SIZE) -> None:
        all_types = tuple(dict.fromkeys((*types, *CORE_MESSAGES)))
        self.types = all_types
        self.max_size = max_size
        self._decoder = msgspec.msgpack.Decoder(Union[all_types])  # noqa: UP007 - runtime union of a tuple

    def decode(self, payload: bytes) -> Any | DecodeError:
        if len(payload) > self.max_size:
            return DecodeError("too_large", f"{len(payload)} > {self.max_size}")
        try:
            return self._decoder.decode(payload)
        # msgspec raises UnicodeDecodeError (a ValueError), not DecodeError, for a tag that is not UTF-8.
        except (msgspec.MsgspecError, ValueError, OverflowError, RecursionError) as exc:
            return DecodeError("malformed", f"{type(exc).__name__}: {exc}"[:200])

    def seal(self, signer: Signer, message: Any) -> bytes:
        """Encode, sign and frame one message from `signer`'s node."""
        payload = encode(message)
        if len(payload) > self.max_size:
            # Our own output too big is a bug in our code, not peer input: raise.
            raise ValueError(f"message of {len(payload)} bytes exceeds {self.max_size}")
        sig = signer.sign(signing_bytes(signer.node_id, payload))
        return _HEADER.pack(VERSION, signer.node_id) + sig + payload

    def open(self, verifier: Verifier, data: bytes, lazy: tuple[type, ...] = ()) -> Opened | DecodeError:
        """Check and decode an envelope from a peer; every failure is a `DecodeError` value. Messages
        of the `lazy` types come back unchecked (`verified=False`): see the module docstring."""
        if len(data) > self.max_size + HEADER_SIZE:
            return DecodeError("too_large", f"{len(data)} bytes")
        if len(data) < HEADER_SIZE:
            return DecodeError("truncated", f"{len(data)} bytes")
        version, sender = _HEADER.unpack_from(data)
        if version != VERSION:
            return DecodeError("bad_version", str(version))
        if not verifier.knows(sender):
            return DecodeError("unknown_sender", str(sender))
        sig = data[_HEADER.size:HEADER_SIZE]
        payload = data[HEADER_SIZE:]
        if lazy:
            message = self.decode(payload)
            if not isinstance(message, DecodeError) and isinstance(message, lazy):
                return Opened(sender=sender, message=message, signature=sig, payload=payload, verified=False)
        if not verifier.verify(sender, signing_bytes(sender, payload), sig):
            return DecodeError("bad_signature", str(sender))
        if not lazy:
            message = self.decode(payload)
        if isinstance(message, DecodeError):
            return message
        return Opened(sender=sender, message=message, signature=sig, payload=payload)
