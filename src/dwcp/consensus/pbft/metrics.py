"""PBFT's metrics of one node (`pbft_*`), fed by the driver (`transport/driver.py: CommitObserver`).

The driver calls `committed(height, txs, latencies)` once per block after it is durable (latencies are
submit -> durable commit of the transactions submitted to *this* node) and `update(status)` with
`Driver.status()` (core status merged with the driver's) after each block and every sync interval.
Cores never see these objects: they only expose read-only `status()`.

T-PBFT (`tpbft/metrics.py`) reuses this class under its own prefix, so the seed's `tpbft_*` names
and these `pbft_*` ones mean the same thing for their protocol. Names are listed in docs/contracts.md.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Fine below 100 ms: the T-PBFT target is p99 <= 20 ms, the seed's baseline 60 ms.
LATENCY_BUCKETS = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1,
    0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class Metrics:
    """`<prefix>_*` metrics of one node, built from a registry passed in (nothing registered at import)."""

    prefix = "pbft"

    def __init__(self, registry: CollectorRegistry) -> None:
        p = self.prefix
        self.latency = Histogram(
            f"{p}_consensus_latency_seconds",
            "Seconds from a client submitting a transaction to this node until the block holding it is "
            "durably committed (fsynced) in this node's log.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.transactions = Counter(
            f"{p}_transactions_committed_total",
            "Transactions this node has durably committed (each counted once, at its first block), "
            "whichever node they were submitted to.",
            registry=registry,
        )
        self.blocks = Counter(
            f"{p}_blocks_committed_total",
            "Blocks this node has durably committed since it started (including blocks fetched by catch-up).",
            registry=registry,
        )
        self.height = Gauge(
            f"{p}_committed_height", "Height of the newest block durably committed in this node's log.",
            registry=registry,
        )
        self.view_changes = Counter(
            f"{p}_view_changes_total",
            "View changes this node has completed since it started (a primary was replaced).",
            registry=registry,
        )
        self.view = Gauge(f"{p}_view", "The view this node is in, within its current epoch.", registry=registry)
        self.pending = Gauge(
            f"{p}_pending_transactions",
            "Transactions submitted to this node that are not yet durably committed.",
            registry=registry,
        )
        self._view_changes_seen = 0

    def committed(self, height: int, txs: int, latencies: list[float]) -> None:
        """Block `height` with `txs` executed transactions is durable; `latencies` are ours, in seconds."""
        self.blocks.inc()
        if txs:
            self.transactions.inc(txs)
        self.height.set(height)
        for seconds in latencies:
            self.latency.observe(seconds)

    def update(self, status: dict[str, Any]) -> None:
        """Gauges from `Driver.status()`; view changes as the increase of the core's running count."""
        if "height" in status:
            self.height.set(status["height"])
        if "view" in status:
            self.view.set(status["view"])
        if "pending" in status:
            self.pending.set(status["pending"])
        changes = status.get("view_changes")
        if isinstance(changes, int) and changes > self._view_changes_seen:
            self.view_changes.inc(changes - self._view_changes_seen)
            self._view_changes_seen = changes
