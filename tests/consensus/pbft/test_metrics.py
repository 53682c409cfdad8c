"""PBFT's own metrics: `pbft_*` names (T-PBFT keeps the seed's `tpbft_*`, tests/consensus/tpbft)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from dwcp.consensus.pbft.metrics import Metrics


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


def test_pbft_exports_its_own_names_and_no_tpbft_ones(reg: CollectorRegistry) -> None:
    metrics = Metrics(reg)
    metrics.committed(1, 4, [0.003])
    metrics.update({"node": 0, "height": 1, "view": 2, "pending": 5, "view_changes": 2, "group": [0, 1]})
    assert reg.get_sample_value("pbft_blocks_committed_total") == 1
    assert reg.get_sample_value("pbft_transactions_committed_total") == 4
    assert reg.get_sample_value("pbft_consensus_latency_seconds_bucket", {"le": "0.003"}) == 1
    assert reg.get_sample_value("pbft_view") == 2
    assert reg.get_sample_value("pbft_pending_transactions") == 5
    assert reg.get_sample_value("pbft_view_changes_total") == 2
    names = {m.name for m in reg.collect()}
    assert names == {"pbft_consensus_latency_seconds", "pbft_transactions_committed", "pbft_blocks_committed",
                     "pbft_committed_height", "pbft_view_changes", "pbft_view", "pbft_pending_transactions"}
