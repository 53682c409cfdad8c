"""T-PBFT's node settings: PBFT's plus the consensus group's size and the epoch length."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dwcp.consensus.pbft.settings import Settings as PbftSettings
from dwcp.consensus.tpbft.replica import Config


class Settings(PbftSettings):
    group_size: int | None = Field(None, ge=4, description="Consensus group size; None: the core's default "
                                   "(quorum plus max(1, f // 2)).")
    epoch_length: int | None = Field(
        None, ge=1, description="Blocks per epoch (the group is re-chosen after each); None: the core's default."
    )

    def config_values(self, max_pending: int) -> dict[str, Any]:
        values = super().config_values(max_pending)
        for name in ("group_size", "epoch_length"):  # None: keep the core's default
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        return values

    def core_config(self, max_pending: int) -> Config:
        return Config(**self.config_values(max_pending))
