"""Protocol metrics of a consensus node, fed by the driver (`transport/driver.py: CommitObserver`).

The driver calls `committed(height, txs, latencies)` once per block after it is durable (latencies are
submit -> durable commit of the transactions submitted to *this* node) and `update(status)` with
`Driver.status()` (core status merged with the driver's) after each block and every sync interval.
Cores never see these objects: they only expose read-only `status()`.

Names are the T-PBFT catalog in docs/contracts.md. When the tpbft service runs the PBFT baseline
(`protocol: pbft`) the same names are used: the group is then the whole committee and no trust
scores are reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Fine below 100 ms: the target is p99 <= 20 ms, the seed's baseline 60 ms.
LATENCY_BUCKETS = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1,
    0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


def _trust_items(trust: Any) -> Iterable[tuple[str, float]]:
    """(node label, score) pairs from a core's `trust` status: a mapping node -> score or a list by node id."""
    if isinstance(trust, Mapping):
        return ((str(node), float(score)) for node, score in trust.items())
    if isinstance(trust, list | tuple):
        return ((str(node), float(score)) for node, score in enumerate(trust))
    return ()


class TpbftObserver:
    """`tpbft_*` metrics of one node, built from a registry passed in (nothing registered at import)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "tpbft_consensus_latency_seconds",
            "Seconds from a client submitting a transaction to this node until the block holding it is "
            "durably committed (fsynced) in this node's log.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.transactions = Counter(
            "tpbft_transactions_committed_total",
            "Transactions this node has durably committed (each counted once, at its first block), "
            "whichever node they were submitted to.",
            registry=registry,
        )
        self.blocks = Counter(
            "tpbft_blocks_committed_total",
            "Blocks this node has durably committed since it started (including blocks fetched by catch-up).",
            registry=registry,
        )
        self.height = Gauge(
            "tpbft_committed_height", "Height of the newest block durably committed in this node's log.",
            registry=registry,
        )
        self.view_changes = Counter(
            "tpbft_view_changes_total",
            "View changes this node has completed since it started (a primary was replaced).",
            registry=registry,
        )
        self.view = Gauge("tpbft_view", "The view this node is in, within its current epoch.", registry=registry)
        self.group_member = Gauge(
            "tpbft_group_member",
            "1 when this node is in the current consensus group (votes on blocks), 0 when it only follows.",
            registry=registry,
        )
        self.trust = Gauge(
            "tpbft_trust_score",
            "This node's current global trust (EigenTrust) in each committee member, 0..1.",
            ["node"], registry=registry,
        )
        self.pending = Gauge(
            "tpbft_pending_transactions",
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
        node, group = status.get("node"), status.get("group")
        if node is not None and group is not None:
            self.group_member.set(1 if node in group else 0)
        changes = status.get("view_changes")
        if isinstance(changes, int) and changes > self._view_changes_seen:
            self.view_changes.inc(changes - self._view_changes_seen)
            self._view_changes_seen = changes
        for label, score in _trust_items(status.get("trust")):
            self.trust.labels(label).set(score)
