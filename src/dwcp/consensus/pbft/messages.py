"""PBFT's own messages (votes, transactions and decided blocks are the core's `Vote`, `TxBatch`,
`Decided`). Every message carries the (epoch, view) it belongs to where that matters."""

from __future__ import annotations

from functools import cached_property

import msgspec

from dwcp.consensus.core.codec import encode
from dwcp.consensus.core.messages import Block, Certificate, Message, digest


class PrePrepare(Message, tag="pp"):
    """The primary of (epoch, view) proposes `block` at `block.height`."""

    epoch: int
    view: int
    block: Block


class Checkpoint(Message, tag="ckpt"):
    """"I have executed up to `height` and my state digest is `state`" (every K heights)."""

    height: int
    state: bytes


class Prepared(msgspec.Struct, frozen=True, array_like=True):
    """Proof that `block` was prepared: a quorum certificate of prepare votes for its digest, or of
    commit votes once it is committed (which implies a prepared quorum in the same view)."""

    block: Block
    certificate: Certificate


class ViewChange(Message, tag="vc", dict=True):
    """Vote to move to `view` of `epoch`. `height` is our last stable checkpoint and `committed` its
    proof (a `Certificate` of kind "checkpoint": a quorum's signatures over `Checkpoint(height,
    digest)`; None at 0); `prepared` lists our highest-view proof for each height above it (or
    above the epoch's start), executed or not (see viewchange.py)."""

    epoch: int
    view: int
    height: int
    committed: Certificate | None
    prepared: tuple[Prepared, ...]

    @cached_property
    def encoded_digest(self) -> bytes:
        """Digest of the encoding, how a NEW-VIEW names it; computed once per object (a NEW-VIEW's
        completion compares every stored view change's digest each time one more arrives)."""
        return digest(encode(self))


class SignedViewChange(msgspec.Struct, frozen=True, array_like=True):
    sender: int
    signature: bytes
    view_change: ViewChange


class ViewChangeRef(msgspec.Struct, frozen=True, array_like=True):
    """One signed view change a NEW-VIEW is built on, by its sender and the digest of its encoding."""

    sender: int
    digest: bytes


class NewView(Message, tag="nv"):
    """The new primary's proof and choice, by reference: the 2f+1 view changes it used (sender and
    digest: every replica received them from their senders, and fetches any it lacks with
    `ViewChangeRequest`) and the digests of the blocks it re-proposes for the heights above the
    low mark, which every replica recomputes from those view changes before accepting (see
    newview.py). Its size is O(n + heights) digests, never the view changes themselves, so it
    stays small at n = 100 where 67 view changes with their certificates exceed a 1 MiB frame."""

    epoch: int
    view: int
    view_changes: tuple[ViewChangeRef, ...]
    proposals: tuple[bytes, ...]


class ViewChangeRequest(Message, tag="vcreq"):
    """Send me these senders' view changes that the NEW-VIEW of (epoch, view) is built on."""

    epoch: int
    view: int
    senders: tuple[int, ...]


class ViewChangeRelay(Message, tag="vcrelay"):
    """A view change passed on by a replica that holds it (the answer to `ViewChangeRequest`): it is
    authenticated by its original sender's signature, not by the relay's envelope."""

    view_change: SignedViewChange


class NewViewRequest(Message, tag="nvreq"):
    epoch: int
    view: int


class Status(Message, tag="status"):
    """Where a node is: sent on start (asks peers to answer with theirs) so a restarted node learns
    how far behind it is and which view the others are in."""

    epoch: int
    view: int
    height: int
    reply: bool = False


PBFT_MESSAGES: tuple[type, ...] = (
    PrePrepare, Checkpoint, ViewChange, NewView, NewViewRequest, ViewChangeRequest, ViewChangeRelay, Status,
)
