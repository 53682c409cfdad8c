"""PBFT's node settings (`services.<service>.settings` with `protocol: pbft`), validated by this model.

The node's shared settings (API limits, catch-up, keys) are `consensus.settings.ConsensusSettings`;
the rest of the mapping is this protocol's and is checked here, so a setting PBFT has no use for
(`group_size`, say) is an error naming the protocol, never silently dropped.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dwcp.consensus.pbft.state import Config


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(256, ge=1, le=10_000, description="Most transactions in one block.")
    batch_timeout_ms: float = Field(5.0, gt=0, description="Least time between two blocks that are not full: "
                                    "a transaction waits at most this long for its block to fill.")
    forward_interval_ms: float = Field(
        5.0, gt=0, description="Least time between two forwards of client transactions to the primary: "
        "at once under light load, one batch (one signature) per interval under heavy load.")
    view_change_timeout_ms: float = Field(1000.0, gt=0, description="Progress timeout before a view change.")
    new_view_timeout_ms: float | None = Field(
        None, gt=0, description="Wait for the new primary's NEW-VIEW after a view change (doubles per failed one, "
        "up to 4x); None: view_change_timeout_ms.")
    # One block in flight: the next one gathers everything that arrived while this one commits, so blocks
    # grow with load. On the 2-CPU loopback cluster at 1,000 tx/s this halved p50 and p99 against the
    # core's 8 (benchmarks/tpbft_cluster.py); over a WAN, where a block takes an RTT or more, raise it.
    max_inflight: int | None = Field(
        1, ge=1, le=64, description="Blocks the primary keeps in flight (pipelining); None: the core's default."
    )

    def config_values(self, max_pending: int) -> dict[str, Any]:
        progress_timeout = self.view_change_timeout_ms / 1000
        values: dict[str, Any] = {
            "batch_size": self.batch_size,
            "batch_delay": self.batch_timeout_ms / 1000,
            "gossip_delay": self.forward_interval_ms / 1000,
            "request_timeout": progress_timeout,  # a pending tx this old suspects the primary
            "view_change_timeout": (progress_timeout if self.new_view_timeout_ms is None  # then wait this
                                    else self.new_view_timeout_ms / 1000),  # long for NEW-VIEW
            "max_pending": max_pending,
        }
        if self.max_inflight is not None:  # None: keep the core's default
            values["max_inflight"] = self.max_inflight
        return values

    def core_config(self, max_pending: int) -> Config:
        """The core's Config; `max_pending` is the node's shared pool bound."""
        return Config(**self.config_values(max_pending))
