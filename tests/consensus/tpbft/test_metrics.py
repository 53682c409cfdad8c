"""T-PBFT metrics from driver events: blocks, latencies and status snapshots into `tpbft_*` samples."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from dwcp.consensus.tpbft.metrics import Metrics as TpbftMetrics


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


def _status(**over) -> dict:
    base = {"node": 2, "height": 7, "view": 1, "pending": 3, "group": [0, 1, 2, 3], "view_changes": 0}
    return base | over


def test_nothing_is_registered_until_built(reg: CollectorRegistry) -> None:
    assert reg.get_sample_value("tpbft_blocks_committed_total") is None
    TpbftMetrics(reg)
    assert reg.get_sample_value("tpbft_blocks_committed_total") == 0
    assert reg.get_sample_value("tpbft_committed_height") == 0


def test_committed_block_counts_blocks_txs_and_our_latencies(reg: CollectorRegistry) -> None:
    obs = TpbftMetrics(reg)
    obs.committed(1, 5, [0.004, 0.012])
    obs.committed(2, 0, [])
    assert reg.get_sample_value("tpbft_blocks_committed_total") == 2
    assert reg.get_sample_value("tpbft_transactions_committed_total") == 5
    assert reg.get_sample_value("tpbft_committed_height") == 2
    assert reg.get_sample_value("tpbft_consensus_latency_seconds_count") == 2
    assert reg.get_sample_value("tpbft_consensus_latency_seconds_sum") == pytest.approx(0.016)
    assert reg.get_sample_value("tpbft_consensus_latency_seconds_bucket", {"le": "0.005"}) == 1
    assert reg.get_sample_value("tpbft_consensus_latency_seconds_bucket", {"le": "0.02"}) == 2


def test_status_sets_view_height_pending_and_membership(reg: CollectorRegistry) -> None:
    obs = TpbftMetrics(reg)
    obs.update(_status())
    assert reg.get_sample_value("tpbft_view") == 1
    assert reg.get_sample_value("tpbft_committed_height") == 7
    assert reg.get_sample_value("tpbft_pending_transactions") == 3
    assert reg.get_sample_value("tpbft_group_member") == 1
    obs.update(_status(group=[0, 1, 3, 4]))
    assert reg.get_sample_value("tpbft_group_member") == 0


def test_view_changes_counter_follows_the_core_count_without_double_counting(reg: CollectorRegistry) -> None:
    obs = TpbftMetrics(reg)
    for count in (0, 1, 1, 3, 3):
        obs.update(_status(view_changes=count))
    assert reg.get_sample_value("tpbft_view_changes_total") == 3


@pytest.mark.parametrize("trust", [{0: 0.5, "1": 0.25, 3: 0.25}, [0.5, 0.25, 0.0, 0.25]])
def test_trust_scores_by_node(reg: CollectorRegistry, trust) -> None:
    obs = TpbftMetrics(reg)
    obs.update(_status(trust=trust))
    assert reg.get_sample_value("tpbft_trust_score", {"node": "0"}) == 0.5
    assert reg.get_sample_value("tpbft_trust_score", {"node": "1"}) == 0.25
    assert reg.get_sample_value("tpbft_trust_score", {"node": "3"}) == 0.25


def test_status_without_trust_or_group_leaves_them_unset(reg: CollectorRegistry) -> None:
    obs = TpbftMetrics(reg)
    obs.update({"node": 0, "height": 1, "view": 0, "pending": 0})
    assert reg.get_sample_value("tpbft_trust_score", {"node": "0"}) is None
    assert reg.get_sample_value("tpbft_group_member") == 0


def test_every_metric_has_a_help_text(reg: CollectorRegistry) -> None:
    TpbftMetrics(reg)
    families = {m.name: m for m in reg.collect()}
    for name in ("tpbft_consensus_latency_seconds", "tpbft_transactions_committed", "tpbft_blocks_committed",
                 "tpbft_committed_height", "tpbft_view_changes", "tpbft_view", "tpbft_group_member",
                 "tpbft_trust_score", "tpbft_pending_transactions"):
        assert len(families[name].documentation) > 20, name
