"""Inputs to a protocol core: facts the driver (TCP transport or simulator) reports.

All are frozen, slotted, keyword-only dataclasses. A core is fed them one at a time through
`handle(now, input)`; `now` is the driver's clock (seconds, monotonic), never read inside a core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dwcp.consensus.core.messages import Block, Certificate, Transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class Timer:
    """A timer's identity; setting a timer with an equal identity replaces the pending one."""

    kind: str
    key: int = 0


class Input:
    """Base of everything a core accepts."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Started(Input):
    """The driver is running: sent once, after any `Restored` inputs and before anything else."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Received(Input):
    """A decoded message from `sender` (the authenticated peer it came from).

    `signature` is its envelope signature; cores keep it to build certificates that a third party
    can check. With `verified` (the default) the driver's codec has checked it. `verified=False` is
    only for the message types the core lists in `lazy_messages`: the core checks those itself when
    they matter (`codec.signed_by`), and must check anything else it is handed unverified.
    """

    sender: int
    message: Any
    signature: bytes = b""
    verified: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(Input):
    timer: Timer


@dataclass(frozen=True, slots=True, kw_only=True)
class Submitted(Input):
    """A client transaction handed to this node (HTTP POST or the simulator's load)."""

    tx: Transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmittedBatch(Input):
    """Client transactions handed over together (one batched HTTP request), for the cores that say
    `batch_submissions = True`: taken in one step, so they are forwarded in one signed `TxBatch`
    instead of one now and the rest a forwarding interval later. Other cores get one `Submitted` each."""

    txs: tuple[Transaction, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Local(Input):
    """A fact from another component of this node, not a peer (a Narwhal worker: "batch stored")."""

    message: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered(Input):
    """A value this core `Persist`ed before a restart; fed before any `Restored` input."""

    key: str
    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Restored(Input):
    """A block this node committed before a restart, read back from its own log (trusted, in order).

    `tx_ids` are the transactions its `Commit` named (`Commit.txs`), which a core whose blocks do not
    carry transactions (Bullshark: a block names batches) needs to refuse a committed one again."""

    height: int
    block: Block
    certificate: Certificate
    tx_ids: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetched(Input):
    """A block fetched from `sender` during catch-up; the core verifies the certificate itself."""

    sender: int
    block: Block
    certificate: Certificate
