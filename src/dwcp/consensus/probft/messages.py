"""ProBFT's own messages. Votes travel as `Ballot`s to VRF-drawn samples; PBFT's plain `Vote` is not
accepted from peers (it carries no proof of who may send it where)."""

from __future__ import annotations

from dwcp.consensus.core.messages import Block, Message, Vote
from dwcp.consensus.pbft.messages import NewView


class Proposal(Message, tag="propose"):
    """The leader of (epoch, view) proposes `block`. `header_signature` is the leader's signature over
    `header(epoch, view, height, digest)`, which every ballot for the block carries on, so a replica
    that receives a ballot for another block at the same (epoch, view, height) holds proof that the
    leader equivocated (docs/probft.md, "equivocation evidence")."""

    epoch: int
    view: int
    block: Block
    header_signature: bytes


class Ballot(Message, tag="ballot"):
    """A prepare or commit vote sent to the sender's sample for (epoch, view, kind). `proof` is the
    sender's VRF proof for that sample (the same bytes in every ballot of the view and phase);
    `header_signature` is the leader's signature over the block's header. In dense mode (sample =
    everyone) `proof` is empty, and so is a commit ballot's `header_signature`."""

    kind: str  # "prepare" | "commit"
    epoch: int
    view: int
    height: int
    digest: bytes
    proof: bytes
    header_signature: bytes


class SignedNewView(NewView, tag="signed_nv"):
    """PBFT's NEW-VIEW plus the new leader's header signature for each re-proposal (same order as
    `proposals`), so ballots for re-proposed blocks carry one like any proposal's and a second signed
    header for the same (epoch, view, height) is equivocation evidence there too. A new message type,
    not a new codec VERSION: the envelope version is shared by every protocol and signed into every
    certificate, so bumping it would orphan all stored certificates; a replica that predates this
    type drops it as `malformed`."""

    header_signatures: tuple[bytes, ...]


def header(epoch: int, view: int, height: int, digest: bytes) -> Vote:
    """What a leader signs for each proposal (a `Vote` of kind "propose": the same encoding rules)."""
    return Vote(kind="propose", epoch=epoch, view=view, height=height, digest=digest)


PROBFT_MESSAGES: tuple[type, ...] = (Proposal, Ballot, SignedNewView)
