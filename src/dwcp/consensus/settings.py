"""Settings of a consensus node (`services.<tpbft|probft|bullshark>.settings` in the inventory).

Keys. With `key_dir` set, node I loads its private key from `<key_dir>/node-<I>.key` and the
committee's public keys from `<key_dir>/committee.json` (what `dwcp consensus keygen` writes).
Without it, every node derives the whole committee's keys from `dev_seed`: convenient for
`dwcp up` on one machine and for tests, and DEV-ONLY, since anyone who knows the seed (it is in
the inventory) can sign as any node.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ConsensusSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    protocol: Literal["tpbft", "pbft"] | None = Field(
        None, description="Core to run; None runs the service's own protocol (tpbft for the tpbft service, "
        "pbft runs classic PBFT over the whole committee as the baseline)."
    )
    # Batching and timers, handed to the protocol core.
    batch_size: int = Field(256, ge=1, le=10_000, description="Most transactions in one block.")
    batch_timeout_ms: float = Field(5.0, gt=0, description="Least time between two blocks that are not full: "
                                    "a transaction waits at most this long for its block to fill.")
    forward_interval_ms: float = Field(
        5.0, gt=0, description="Least time between two forwards of client transactions to the primary: "
        "at once under light load, one batch (one signature) per interval under heavy load.")
    view_change_timeout_ms: float = Field(1000.0, gt=0, description="Progress timeout before a view change.")
    group_size: int | None = Field(None, ge=4, description="T-PBFT consensus group size; None: the core's default.")
    # One block in flight: the next one gathers everything that arrived while this one commits, so blocks
    # grow with load. On the 2-CPU loopback cluster at 1,000 tx/s this halved p50 and p99 against the
    # core's 8 (benchmarks/tpbft_cluster.py); over a WAN, where a block takes an RTT or more, raise it.
    max_inflight: int | None = Field(
        1, ge=1, le=64, description="Blocks the primary keeps in flight (pipelining); None: the core's default."
    )
    epoch_length: int | None = Field(
        None, ge=1, description="T-PBFT blocks per epoch (the group is re-chosen after each); None: the core's default."
    )
    # Client API limits.
    max_tx_bytes: int = Field(4096, ge=1, le=1024 * 1024, description="Largest transaction payload accepted.")
    max_pending: int = Field(100_000, ge=1, description="Pending transactions per node before 503 (backpressure).")
    # Catch-up and transport.
    sync_interval_ms: float = Field(500.0, gt=0, description="How often a node tells peers its committed height.")
    sync_max_blocks: int = Field(64, ge=1, description="Most blocks in one catch-up response.")
    peer_queue_max_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024, description="Outbound queue bound per peer.")
    # Keys (see module docstring).
    key_dir: str | None = Field(None, description="Directory with node-<I>.key and committee.json; None: dev keys.")
    dev_seed: str = Field("dwcp-dev-insecure", min_length=1, description="Seed of the DEV-ONLY derived keys.")
