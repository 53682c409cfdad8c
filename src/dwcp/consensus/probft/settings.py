"""ProBFT's node settings: PBFT's plus the sample and quorum factors (the paper's o and l)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dwcp.consensus.pbft.settings import Settings as PbftSettings
from dwcp.consensus.probft.replica import Config


class Settings(PbftSettings):
    # Shorter than PBFT's 1 s: issue 11's finalization p99 < 1 s at n = 7 with 2 Byzantine nodes over a WAN
    # needs a faulty first primary replaced within about half a second (docs/probft.md, "Session 3").
    view_change_timeout_ms: float = Field(500.0, gt=0, description="Progress timeout before a view change.")
    new_view_timeout_ms: float | None = Field(
        350.0, gt=0, description="Wait for the new primary's NEW-VIEW after a view change (doubles per failed one, "
        "up to 4x); None: view_change_timeout_ms.")
    sample_factor: float = Field(0.0, ge=0, le=100, description="o: each prepare and commit goes to "
                                 "ceil(o * sqrt(n)) VRF-drawn peers; 0: the default (docs/probft.md).")
    quorum_factor: float = Field(0.0, ge=0, le=100, description="l: a phase completes with ceil(l * sqrt(n)) "
                                 "matching ballots; 0: derived from liveness_miss.")
    liveness_miss: float = Field(1e-2, gt=0, lt=1, description="Target chance that a correct leader's phase misses "
                                 "its quorum with f silent nodes (sets the default quorum).")

    def config_values(self, max_pending: int) -> dict[str, Any]:
        values = super().config_values(max_pending)
        values.update(sample_factor=self.sample_factor, quorum_factor=self.quorum_factor,
                      liveness_miss=self.liveness_miss)
        return values

    def core_config(self, max_pending: int) -> Config:
        return Config(**self.config_values(max_pending))
