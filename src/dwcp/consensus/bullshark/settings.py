"""Bullshark's node settings (`services.bullshark.settings`), validated by this model.

Primary settings become the core's `primary.Config`; worker settings are read by the worker
process (`transport/dataplane.py`). Defaults are Narwhal's (header 1,000 B, gc_depth 50, batch 500,000 B,
max_batch_delay 100 ms) except max_header_delay, 200 ms (Narwhal's 100 ms: measured below), plus HammerHead's
leader schedule (`schedule_period` 2); the core's own `Config` defaults stay Narwhal's and plain round-robin
(the simulator's).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dwcp.consensus.bullshark.primary import Config


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    header_size: int = Field(1000, ge=32, description="Bytes of batch digests that make a header worth proposing.")
    # 200 ms, not Narwhal's 100 (session 9, docs/bullshark.md): a round costs each primary a fixed amount of CPU, and
    # at 300,000 tx/s offered on the 2-core machine 100 ms rounds took 0.25-0.29 cores (1.0-1.3 us per committed
    # tx), 200 ms rounds 0.18-0.20 (0.63-0.69 us), left to the workers: 258,112 / 283,201 / 309,011 tx/s against
    # 214,845-274,843 (median 256,605), at 0.44-0.55 s consensus latency against 0.20-0.23 s.
    max_header_delay_ms: float = Field(200.0, gt=0, description="Most time between two headers of this primary.")
    # Adaptive (session 10, docs/bullshark.md): at light load 200 ms rounds doubled dwcp up's latency (p50/p99
    # 0.42/1.41 s against 0.22/0.69 s at 100 ms); a header with fewer than busy_header_batches of the worker's
    # batches at min_header_delay_ms goes out then, a busier one waits for max_header_delay_ms.
    min_header_delay_ms: float = Field(100.0, ge=0, description="A header with fewer than busy_header_batches "
                                       "batches goes out after this long (0: always max_header_delay_ms).")
    busy_header_batches: int = Field(4, ge=1, description="Own batches that make a header wait for "
                                     "max_header_delay_ms instead of min_header_delay_ms.")
    gc_depth: int = Field(50, ge=4, description="Rounds of DAG kept below the last committed anchor.")
    # HammerHead on by default (docs/bullshark.md, "Leader reputation as the node's default"): in the simulator
    # with f Byzantine nodes it moves anchors off authors whose anchors never certify (n = 100, 33 Byzantine: p99
    # 2.50 -> 1.44 s), and every seeded Byzantine and crashed campaign at n = 4 and 10 stays at 0 violations.
    schedule_period: int = Field(2, ge=0, description="HammerHead leader reputation: committed anchors per "
                                 "schedule (0: plain round-robin anchors).")
    sync_retry_ms: float = Field(250.0, gt=0, description="Period of requests for still-missing certificates.")
    batch_size: int = Field(500_000, ge=1024, le=4_000_000, description="Bytes of transactions that seal a batch.")
    max_batch_delay_ms: float = Field(100.0, gt=0, description="Most time a transaction waits for its batch to seal.")
    max_inflight_batches: int = Field(16, ge=1, description="Own batches sent but not yet acknowledged by 2f+1 "
                                      "workers before the worker stops reading from clients (backpressure).")

    def core_config(self, max_pending: int) -> Config:
        """The primary's Config (`max_pending` bounds client txs, which a Bullshark primary never holds)."""
        return Config(header_size=self.header_size, max_header_delay=self.max_header_delay_ms / 1000,
                      min_header_delay=self.min_header_delay_ms / 1000, busy_header_batches=self.busy_header_batches,
                      gc_depth=self.gc_depth, schedule_period=self.schedule_period,
                      sync_retry=self.sync_retry_ms / 1000)
