"""Message types shared by every protocol: transactions, blocks, votes, certificates, mempool gossip.

All are msgspec Structs: frozen, encoded as msgpack arrays (`array_like`) with a short string tag so
one codec can decode a union of several protocols' messages. Field order is part of the wire format
(protected by `codec.VERSION`); add fields only at the end, with defaults.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import msgspec

DIGEST_SIZE = 32
_blake2b = hashlib.blake2b
TX_ID_SIZE = 16


class Message(msgspec.Struct, frozen=True, array_like=True, tag_field="t"):
    """Base of every message on the wire."""


class Transaction(msgspec.Struct, frozen=True, array_like=True, dict=True):
    """An opaque client transaction. Its id is a hash of the payload, so equal payloads are one tx.

    The id is computed once per object, when it is made or decoded (`__post_init__`, which msgspec also
    runs on decode), into the instance `__dict__` (`dict=True`; only `payload` is encoded): every node
    asks a tx for its id a dozen times between submit and commit, and every tx it decodes is asked at
    least once (a pre-prepare's batch check). A `functools.cached_property` did the same lazily, but its
    first access takes a lock in Python 3.11: 1.5 us per tx against 0.6 us here (issue 12)."""

    payload: bytes
    id: ClassVar[bytes]  # set per instance by __post_init__ (a ClassVar: not a field, not encoded)

    def __post_init__(self) -> None:
        self.__dict__["id"] = _blake2b(self.payload, digest_size=TX_ID_SIZE).digest()

    def __getattr__(self, name: str) -> Any:
        # Only for an object made without __post_init__ (`copy.copy` of a struct skips it).
        if name == "id":
            self.__post_init__()
            return self.__dict__["id"]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def tx_id(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=TX_ID_SIZE).digest()


class Block(msgspec.Struct, frozen=True, array_like=True):
    """A batch of transactions at one height. `epoch`/`view` say under which leader it was proposed;
    `meta` is protocol data all nodes must agree on (T-PBFT: trust reports), codec-encoded."""

    height: int
    epoch: int
    view: int
    proposer: int
    txs: tuple[Transaction, ...] = ()
    meta: bytes = b""


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


class Vote(Message, tag="vote"):
    """A signed statement "`kind` for block `digest` at (epoch, view, height)".

    Sent as the message itself (PBFT prepare and commit are votes), so the envelope signature over
    its encoding is the vote signature, and a certificate is a list of those signatures.
    """

    kind: str  # "prepare" | "commit" | protocol-specific
    epoch: int
    view: int
    height: int
    digest: bytes


class Certificate(msgspec.Struct, frozen=True, array_like=True):
    """Quorum proof for a vote: each signer's envelope signature over `Vote(kind, epoch, view, height,
    digest)`. A commit certificate lets a node that saw none of the protocol messages verify a block."""

    kind: str
    epoch: int
    view: int
    height: int
    digest: bytes
    signers: tuple[int, ...]
    signatures: tuple[bytes, ...]

    def vote(self) -> Vote:
        return Vote(kind=self.kind, epoch=self.epoch, view=self.view, height=self.height, digest=self.digest)

    def summary(self) -> dict[str, Any]:
        """What `GET /v1/blocks/{height}` shows of the certificate (JSON-ready)."""
        return {"kind": self.kind, "view": self.view, "signers": list(self.signers)}


class TxBatch(Message, tag="txs"):
    """Mempool gossip: transactions a node received from clients, forwarded to proposers."""

    txs: tuple[Transaction, ...]


class CertifiedBlock(msgspec.Struct, frozen=True, array_like=True):
    block: Block
    certificate: Certificate


class Decided(Message, tag="decided"):
    """A committed block pushed to nodes that did not vote on it (T-PBFT followers)."""

    block: Block
    certificate: Certificate


class BlockRequest(Message, tag="blkreq"):
    """Catch-up: ask a peer for certified blocks [from_height, to_height]."""

    from_height: int
    to_height: int


class BlockResponse(Message, tag="blkresp"):
    blocks: tuple[CertifiedBlock, ...]


CORE_MESSAGES: tuple[type, ...] = (Vote, TxBatch, Decided, BlockRequest, BlockResponse)
