"""Transport metrics shared by every consensus protocol (`dwcp_consensus_*` in docs/contracts.md)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from dwcp.consensus.core.messages import Vote


def message_kind(message: Any) -> str:
    """Metric label for a message: its wire tag, votes split by phase (few values)."""
    tag = type(message).__struct_config__.tag if hasattr(type(message), "__struct_config__") else None
    base = str(tag) if isinstance(tag, str) else type(message).__name__.lower()
    return f"{base}_{message.kind}" if isinstance(message, Vote) else base


class TransportMetrics:
    """Built from a registry passed in; `protocol` (tpbft, pbft, probft, bullshark) is fixed per node."""

    def __init__(self, registry: CollectorRegistry, protocol: str) -> None:
        self.protocol = protocol
        self.messages_sent = Counter(
            "dwcp_consensus_messages_sent_total",
            "Consensus messages handed to the transport for a peer (a broadcast counts once per peer), by kind.",
            ["protocol", "kind"], registry=registry,
        )
        self.messages_received = Counter(
            "dwcp_consensus_messages_received_total",
            "Consensus messages received from authenticated peers that decoded and verified, by kind.",
            ["protocol", "kind"], registry=registry,
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
        self._sent: dict[str, Any] = {}  # kind -> labelled child (labels() costs a lock and a lookup)
        self._received: dict[str, Any] = {}

    def sent(self, kind: str, n: int = 1) -> None:
        child = self._sent.get(kind)
        if child is None:
            child = self._sent[kind] = self.messages_sent.labels(self.protocol, kind)
        child.inc(n)

    def received(self, kind: str) -> None:
        child = self._received.get(kind)
        if child is None:
            child = self._received[kind] = self.messages_received.labels(self.protocol, kind)
        child.inc()

    def rejected(self, reason: str) -> None:
        self.frames_rejected.labels(self.protocol, reason).inc()

    def dropped(self, channel: str, n: int) -> None:
        self.frames_dropped.labels(self.protocol, channel).inc(n)

    def set_peers(self, n: int) -> None:
        self.peers_connected.labels(self.protocol).set(n)
