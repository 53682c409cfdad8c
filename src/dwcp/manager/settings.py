"""`services.manager.settings` in the inventory.

The default chunk size is `compression.costmodel.DEFAULT_CHUNK_BYTES`, the one place it lives: the
selector API's `chunk_bytes` defaults to it too, so both sides agree on what a chunk is.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from dwcp.compression.costmodel import DEFAULT_CHUNK_BYTES
from dwcp.manager.store import KEEP_VERSIONS

MIB = 1 << 20


class ManagerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Chunking: the size follows the link (bandwidth x chunk_target_seconds), clamped to these bounds.
    chunk_bytes: int = Field(DEFAULT_CHUNK_BYTES, ge=64 * 1024, le=64 * MIB,
                             description="chunk size when the link has not been measured yet")
    chunk_min_bytes: int = Field(1 * MIB, ge=4096, le=64 * MIB)
    chunk_max_bytes: int = Field(16 * MIB, ge=4096, le=64 * MIB)
    chunk_target_seconds: float = Field(0.25, gt=0, description="aim for one chunk per this long on the wire")
    streams: int = Field(4, ge=1, le=64, description="parallel TCP streams per transfer")
    window_per_stream: int = Field(2, ge=1, le=32, description="unacknowledged chunks in flight per stream")
    selector_window: int = Field(16, ge=1, le=256, description="chunks per batch call to the selector")
    selector_timeout_s: float = Field(0.5, gt=0, description="a slower selector answer falls back to the local rule")
    keep_versions: int = Field(
        KEEP_VERSIONS, ge=1,
        description="versions of each key the object store keeps (the newest ones); older versions and the blobs "
        "no kept version names are deleted. Each kept version is a possible delta base: a receiver up to "
        "keep_versions - 1 versions behind gets a delta, one further behind a whole transfer")
    delta_max_base_bytes: int = Field(1 << 30, ge=0, description="largest earlier version used as a delta base")
    transfer_retry_limit: int = Field(20, ge=0, description="reconnects of one transfer before it fails")
    transfer_concurrency: int = Field(4, ge=1, le=64, description="transfers sent at once; more wait queued")
    max_incoming: int = Field(64, ge=1, description="peer connections served at once")
    gil_switch_interval_s: float = Field(
        0.0005, gt=0, le=0.1, description="sys.setswitchinterval for the manager process: the HTTP event loop "
        "waits at most this long for the GIL while transfer threads run Python code (CPython's default: 5 ms)")
    bulk_thread_nice: int = Field(
        10, ge=0, le=19, description="nice value of the threads that move bytes (transfers, the peer port, probes): "
        "when the host is short of CPU, the scheduler runs the HTTP event loop (/health) before them")
    codec_log: Path | None = Field(None, description="append one JSON line per chunk sent saying what decided its "
                                   "codec and what it measured (manager/plan.CodecLog; for benchmarks)")
    # Links.
    probe_interval_s: float = Field(30.0, gt=0, description="seconds between active probes of each peer")
    probe_bytes: int = Field(4 * MIB, ge=0, le=256 * MIB, description="bytes an active bandwidth probe sends")
    # Routing and resilience.
    request_timeout_s: float = Field(5.0, gt=0, description="per call to a consensus node or allocator")
    dependency_concurrency: int = Field(64, ge=1, description="bulkhead: calls in flight per dependency")
    dependency_rate: float = Field(2000.0, gt=0, description="rate limit: calls per second per dependency")
    retry_budget_ratio: float = Field(0.2, ge=0, le=1, description="retries allowed as a share of calls")
    max_tx_bytes: int = Field(65536, ge=1, le=1 << 24, description="largest transaction payload routed")
    high_volume_tx_per_second: float = Field(200.0, gt=0, description="'auto' routing's high-volume threshold")
    # Security.
    peer_key_dir: Path | None = Field(None, description="manager-<i>.key files and peers.json (manager/keys.py); "
                                      "default: fresh keys per deployment (one host only)")
    max_key_bytes: int = Field(1024, ge=1, le=4096, description="longest object key")
