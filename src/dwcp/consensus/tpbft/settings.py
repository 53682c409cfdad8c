"""T-PBFT's node settings: PBFT's plus the consensus group's size, the epoch length, standby voting's
delay and stickiness, the measurement epoch and the fresh-incumbent rule (docs/tpbft.md)."""

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

    standby_after_ms: float | None = Field(
        None, gt=0, description="A group member lets the followers vote at a height still undecided this long "
        "after it accepted the block (standby voting); None: the core's default (300 ms)."
    )
    standby_sticky_after: int | None = Field(
        None, ge=0, description="After this many widened heights in one view, a group member widens every later "
        "height of that view at once (0: never); None: the core's default (1)."
    )
    measurement_epoch: bool | None = Field(
        None, description="Epoch 0 is voted by the whole committee, so the first group is chosen from measured "
        "timeliness; None: the core's default (on)."
    )

    fresh_incumbent: bool | None = Field(
        None, description="An epoch's last height is proposed alone and committed views name deposed primaries, "
        "so a primary deposed in an epoch does not lead the next; None: the core's default (on)."
    )

    accepted_grace: int | None = Field(
        None, ge=0, description="Extra request timeouts a node waits before a view change while the stuck tx is "
        "in a block it accepted in this view that still gains votes (0: off); None: the core's default (1)."
    )

    def config_values(self, max_pending: int) -> dict[str, Any]:
        values = super().config_values(max_pending)
        if self.standby_after_ms is not None:
            values["standby_after"] = self.standby_after_ms / 1000
        # None: keep the core's default
        for name in ("group_size", "epoch_length", "measurement_epoch", "standby_sticky_after", "fresh_incumbent",
                     "accepted_grace"):
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        return values

    def core_config(self, max_pending: int) -> Config:
        return Config(**self.config_values(max_pending))
