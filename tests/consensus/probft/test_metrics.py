"""ProBFT metrics from a real core's status: seed names, counters follow the core's running counts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dwcp.consensus.probft.metrics import Metrics
from tests.consensus.pbft.conftest import submit, tx


def test_three_committed_blocks_show_up_as_quorums_messages_and_finalizations(probft_net):
    net = probft_net(31, batch_size=1)
    submit(net, 0, tx(1), tx(2), tx(3))
    net.run()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    core = net.cores[4]
    for c in net.commits[4]:
        metrics.committed(c.height, len(c.txs), [])
    metrics.update(core.status(), now=0.0)
    metrics.update(core.status(), now=1.0)  # the same counts again: no double counting
    value = registry.get_sample_value
    assert value("probft_blocks_finalized_total") == 3
    assert value("probft_quorum_achieved_total", {"phase": "prepare"}) == 3
    assert value("probft_quorum_attempts_total", {"phase": "commit"}) == 3
    assert value("probft_messages_sent_total", {"phase": "prepare"}) == 3 * core.params.sample_size
    assert value("probft_finalization_duration_seconds_count") == 3
    assert value("probft_quorum_achievement_rate") == 1.0


def test_achievement_rate_is_the_share_of_phases_resolved_in_the_window():
    metrics = Metrics(registry := CollectorRegistry())
    metrics.update({"quorum_achieved": {"prepare": 10, "commit": 10}, "quorum_failed": {}}, now=0.0)
    metrics.update({"quorum_achieved": {"prepare": 19, "commit": 18}, "quorum_failed": {"prepare": 1, "commit": 2}},
                   now=30.0)
    assert registry.get_sample_value("probft_quorum_achievement_rate") == 17 / 20
    metrics.update({"quorum_achieved": {"prepare": 19, "commit": 18}, "quorum_failed": {"prepare": 1, "commit": 2},
                    "rejected": {"outside_sample": 4}}, now=200.0)
    assert registry.get_sample_value("probft_quorum_achievement_rate") == 1.0  # nothing resolved lately
    assert registry.get_sample_value("probft_vrf_proofs_rejected_total", {"reason": "outside_sample"}) == 4
