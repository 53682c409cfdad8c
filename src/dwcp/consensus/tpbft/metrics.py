"""T-PBFT's metrics of one node: the seed's `tpbft_*` names, PBFT's set (`pbft/metrics.py`) under the
`tpbft` prefix plus group membership and trust scores."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from dwcp.consensus.pbft.metrics import Metrics as PbftMetrics


def _trust_items(trust: Any) -> Iterable[tuple[str, float]]:
    """(node label, score) pairs from a core's `trust` status: a mapping node -> score or a list by node id."""
    if isinstance(trust, Mapping):
        return ((str(node), float(score)) for node, score in trust.items())
    if isinstance(trust, list | tuple):
        return ((str(node), float(score)) for node, score in enumerate(trust))
    return ()


class Metrics(PbftMetrics):
    prefix = "tpbft"

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
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

    def update(self, status: dict[str, Any]) -> None:
        super().update(status)
        node, group = status.get("node"), status.get("group")
        if node is not None and group is not None:
            self.group_member.set(1 if node in group else 0)
        for label, score in _trust_items(status.get("trust")):
            self.trust.labels(label).set(score)
