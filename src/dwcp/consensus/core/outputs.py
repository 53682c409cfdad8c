"""Outputs of a protocol core: commands the driver executes, in list order.

`Commit` outputs come in height order with no gaps; the driver must make each durable before it
acknowledges the block's transactions to clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dwcp.consensus.core.inputs import Timer
from dwcp.consensus.core.messages import Block, Certificate, Transaction


class Output:
    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Send(Output):
    to: int
    message: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Multicast(Output):
    """Send to a chosen set of peers (a T-PBFT group, a ProBFT sample); never includes ourselves."""

    to: tuple[int, ...]
    message: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Broadcast(Output):
    """Send to every other committee member."""

    message: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ToLocal(Output):
    """A command for another component of this node, never a peer (a Narwhal worker: "fetch batch")."""

    message: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Persist(Output):
    """Make `value` durable under `key` (replacing the previous one) before executing the outputs
    after this one; a restarted core gets it back as `Recovered`. For what a core must never forget
    (a DAG primary's own header and votes), not for the log (that is `Commit`)."""

    key: str
    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTimer(Output):
    timer: Timer
    delay: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTimer(Output):
    timer: Timer


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit(Output):
    """Block `height` is decided. `txs` are the transactions it executes: the block's, minus any
    already committed at a lower height (a tx executes at its first commit only). The block's digest
    is `certificate.digest` (every path to a commit checked that they match), so a driver never
    re-hashes the block."""

    height: int
    block: Block
    certificate: Certificate
    txs: tuple[Transaction, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected(Output):
    """Peer input that was dropped; `reason` is a metric label (few values)."""

    peer: int
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TxDropped(Output):
    """A locally submitted transaction that was not accepted (duplicate, mempool full)."""

    tx_id: bytes
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSync(Output):
    """We are behind: fetch certified blocks [from_height, to_height] from any of `peers` and feed
    them back as `Fetched` inputs in height order."""

    peers: tuple[int, ...]
    from_height: int
    to_height: int
