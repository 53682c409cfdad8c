"""`services.allocator.settings` in the inventory; every field has a default."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_ALLOCATION_S = 7 * 86_400.0
PolicyName = Literal["maddpg", "round-robin", "first-fit", "best-fit", "random"]


class AllocatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: PolicyName = Field("maddpg", description="Placement policy of the live cluster.")
    shadow_policy: PolicyName = Field(
        "round-robin", description="Baseline replayed in shadow on the same requests; optimization is measured vs it."
    )
    checkpoint: str | None = Field(None, description="MADDPG checkpoint (.pt); None: the packaged one.")
    cluster_file: str | None = Field(None, description="Cluster JSON registered at first start; None: default.")
    register_default_cluster: bool = Field(
        True, description="On first start (empty database), register the cluster (file or the 16-host default)."
    )
    database: str = Field("allocator.sqlite3", description="SQLite file, relative to the instance's data_dir.")
    max_duration_s: float = Field(MAX_ALLOCATION_S, gt=0, le=MAX_ALLOCATION_S, description="Longest allocation "
                                  "accepted (the API documents MAX_ALLOCATION_S; this may only lower it).")
    seed: int = Field(0, description="Seed for the random policy.")
