"""The transport's message counters: same exposition, counted per frame as plain ints (issue 12)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from dwcp.consensus.core.messages import TxBatch, Vote
from dwcp.consensus.transport.metrics import TransportMetrics, message_kind


def _vote(kind: str) -> Vote:
    return Vote(kind=kind, epoch=0, view=0, height=1, digest=b"d" * 32)


def test_a_message_kind_is_looked_up_per_type_not_built_per_message() -> None:
    assert message_kind(_vote("prepare")) == "vote_prepare" and message_kind(_vote("commit")) == "vote_commit"
    assert message_kind(TxBatch(txs=())) == "txs"
    assert message_kind(_vote("prepare")) is message_kind(_vote("prepare"))  # the cached label, no f-string
    # A vote's kind is a peer's string: each type caches a bounded number, the rest are still labelled.
    labels = {message_kind(_vote(f"odd{i}")) for i in range(200)}
    assert len(labels) == 200 and "vote_odd199" in labels


def test_message_counts_are_plain_ints_exposed_as_the_same_counters() -> None:
    registry = CollectorRegistry()
    metrics = TransportMetrics(registry, "tpbft")
    for message in (_vote("prepare"), _vote("prepare"), _vote("commit")):
        metrics.received(message_kind(message))
    metrics.sent("vote_prepare", 9)
    metrics.sent("vote_prepare", 9)
    assert metrics.messages_received.counts == {"vote_prepare": 2, "vote_commit": 1}  # no prometheus child per kind

    def value(name: str, kind: str) -> float | None:
        return registry.get_sample_value(name, {"protocol": "tpbft", "kind": kind})

    assert value("dwcp_consensus_messages_received_total", "vote_prepare") == 2
    assert value("dwcp_consensus_messages_received_total", "vote_commit") == 1
    assert value("dwcp_consensus_messages_sent_total", "vote_prepare") == 18
    text = generate_latest(registry).decode()
    assert "# TYPE dwcp_consensus_messages_sent_total counter" in text
    assert 'dwcp_consensus_messages_sent_total{kind="vote_prepare",protocol="tpbft"} 18.0' in text
