"""Transport metrics shared by every consensus protocol (`dwcp_consensus_*` in docs/contracts.md).

Per-frame cost. A node at n = 10 counts ~30 messages per block, one per frame in and out, so the two
message counters are plain ints kept per kind (a dict add, ~0.2 us) and exposed at scrape time by a
collector (`_KindCounts`), not prometheus `Counter` children (a locked `inc`, ~1.4 us); and a message's
kind label is looked up per type (`message_kind`), not rebuilt per message (issue 12).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily

from dwcp.consensus.core.messages import Vote

_KINDS: dict[type, str | dict[str, str]] = {}  # message type -> label; a vote type -> {vote kind: label}
_MAX_VOTE_KINDS = 64  # per vote type: a vote's kind is a peer's string, so labels past this are built each time


def _base_kind(cls: type) -> str:
    tag = cls.__struct_config__.tag if hasattr(cls, "__struct_config__") else None
    return str(tag) if isinstance(tag, str) else cls.__name__.lower()


def message_kind(message: Any) -> str:
    """Metric label for a message: its wire tag, votes split by phase (few values)."""
    cls = type(message)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _KINDS[cls] = {} if issubclass(cls, Vote) else _base_kind(cls)
    if type(kind) is str:
        return kind
    label = kind.get(message.kind)
    if label is None:
        label = f"{_base_kind(cls)}_{message.kind}"
        if len(kind) < _MAX_VOTE_KINDS:
            kind[message.kind] = label
    return label


class _KindCounts:
    """A counter family `{name}{protocol, kind}` whose values are plain ints, read at scrape time.

    Updated only on the node's event loop; a scrape copies the dict in one C call, so a concurrent
    update cannot break it."""

    def __init__(self, name: str, documentation: str, protocol: str, registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.protocol = name, documentation, protocol
        self.counts: dict[str, int] = {}
        registry.register(self)

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=["protocol", "kind"])

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = self._family()
        for kind, value in list(self.counts.items()):
            family.add_metric([self.protocol, kind], value)
        yield family


class TransportMetrics:
    """Built from a registry passed in; `protocol` (tpbft, pbft, probft, bullshark) is fixed per node."""

    def __init__(self, registry: CollectorRegistry, protocol: str) -> None:
        self.protocol = protocol
        self.messages_sent = _KindCounts(
            "dwcp_consensus_messages_sent",
            "Consensus messages handed to the transport for a peer (a broadcast counts once per peer), by kind.",
            protocol, registry,
        )
        self.messages_received = _KindCounts(
            "dwcp_consensus_messages_received",
            "Consensus messages received from authenticated peers that decoded and verified, by kind.",
            protocol, registry,
        )
        self.frames_rejected = Counter(
            "dwcp_consensus_frames_rejected_total",
            "Inbound frames or connections refused: oversize, malformed, bad_signature, bad_certificate, "
            "unproven_height (a SYNC claim whose proof failed), preauth_limit (too many strangers in the TLS "
            "handshake), handshake_* (TLS refused: failed, timeout, wrong_peer, wrong_deployment).",
            ["protocol", "reason"], registry=registry,
        )
        self.frames_dropped = Counter(
            "dwcp_consensus_frames_dropped_total",
            "Outbound frames discarded because a peer's bounded queue was full (slow or unreachable peer).",
            ["protocol", "channel"], registry=registry,
        )
        self.peers_connected = Gauge(
            "dwcp_consensus_peers_connected",
            "Peers this node has an authenticated outbound connection to (committee size minus one when healthy).",
            ["protocol"], registry=registry,
        )
        self.peers_connected.labels(protocol).set(0)
        self._sent = self.messages_sent.counts
        self._received = self.messages_received.counts

    def sent(self, kind: str, n: int = 1) -> None:
        self._sent[kind] = self._sent.get(kind, 0) + n

    def received(self, kind: str) -> None:
        self._received[kind] = self._received.get(kind, 0) + 1

    def rejected(self, reason: str) -> None:
        self.frames_rejected.labels(self.protocol, reason).inc()

    def dropped(self, channel: str, n: int) -> None:
        self.frames_dropped.labels(self.protocol, channel).inc(n)

    def set_peers(self, n: int) -> None:
        self.peers_connected.labels(self.protocol).set(n)
