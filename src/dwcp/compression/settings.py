"""`services.compression.settings` in the inventory."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class CompressionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shadow_fraction: float = Field(0.05, ge=0.0, le=1.0, description="share of live requests the oracle re-scores")
    shadow_max_per_second: float = Field(
        2.0, gt=0.0, description="cap on oracle runs per second: each costs up to ~60 ms of CPU on a 64 KiB sample"
    )
    shadow_queue: int = Field(8, ge=1, description="pending shadow evaluations; more are dropped, never waited for")
    shadow_pilot_seconds: float = Field(
        60.0,
        gt=0.0,
        description="seconds between the shadow oracle's pilot timings (~80 ms of CPU each), which "
        "rescale its speeds to the calibrated host",
    )
    shadow_pilot_drift: float = Field(
        0.15,
        gt=0.0,
        description="|log| change of the shadow's canary (zstd-1 on the pilot block, timed in every "
        "evaluation's turns) since the last pilot timing beyond which the evaluation is timed again with the pilot",
    )
    accuracy_window: int = Field(500, ge=1, description="shadow evaluations the rolling accuracy is computed over")
    model_path: Path | None = Field(None, description="model artifact; default: the one shipped with dwcp")
    calibration_path: Path | None = Field(
        None, description="per-host codec speeds; default: $DWCP_COMPRESSION_CALIBRATION or the instance's data dir"
    )
    max_sample_bytes: int = Field(65536, ge=1024, le=1 << 24, description="largest decoded sample accepted")
    max_batch: int = Field(256, ge=1, le=4096, description="most items in one /v1/predict/batch call")
