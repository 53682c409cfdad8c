"""Shared PBFT replica types: configuration, modes, timers and the per-height slot."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dwcp.consensus.core.inputs import Timer
from dwcp.consensus.core.messages import Block

BATCH = Timer(kind="batch")
GOSSIP = Timer(kind="gossip")
REQUEST = Timer(kind="request")
VIEW_CHANGE = Timer(kind="viewchange")


class Mode(enum.Enum):
    NORMAL = "normal"
    VIEW_CHANGE = "view_change"


@dataclass(frozen=True, kw_only=True)
class Config:
    batch_size: int = 200  # txs per block
    batch_delay: float = 0.002  # a block that is not full waits until this long after the previous proposal
    gossip_delay: float = 0.001  # client txs are forwarded at most this often (one batch per interval)
    max_inflight: int = 8  # proposals in flight (pipelining)
    request_timeout: float = 1.0  # a tx pending this long triggers a view change
    # ... unless the primary committed a full block within the last request_timeout: then it is busy, not
    # faulty, and the view change waits, at most this many extra timeouts (a bound on censorship).
    saturation_grace: int = 3
    view_change_timeout: float = 1.0  # wait this long for NEW-VIEW (doubles, capped at 4x)
    checkpoint_interval: int = 8
    window: int = 64  # high watermark = stable checkpoint + window
    epoch_length: int = 0  # blocks per epoch (T-PBFT); 0 = one endless epoch
    sync_timeout: float = 0.5  # do not repeat a catch-up request sooner than this
    max_pending: int = 100_000
    max_buffered: int = 20_000  # future-view/epoch messages kept for replay
    max_block_bytes: int = 512 * 1024  # tx payload per block: a pre-prepare stays under the 1 MiB frame limit
    proof_horizon: int = 256  # executed heights whose proofs we keep while no checkpoint is stable


class Slot:
    """The block accepted at one height in the current view."""

    __slots__ = ("block", "digest", "view", "prepared", "sent_commit")

    def __init__(self, block: Block, dig: bytes, view: int) -> None:
        self.block, self.digest, self.view = block, dig, view
        self.prepared = False
        self.sent_commit = False
