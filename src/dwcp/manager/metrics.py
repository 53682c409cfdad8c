"""The manager's own metrics (the request metrics and breakers come from `dwcp.runtime`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from dwcp.manager.store import ObjectStore

TIERS = ("datacenter", "metro", "wan")


class ManagerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.transfer_bytes = Counter(
            "dwcp_transfer_bytes_total", "Bytes of chunks sent to peers: raw (object bytes) or wire (as encoded).",
            ["peer", "kind"], registry=registry)
        self.transfer_chunks = Counter(
            "dwcp_transfer_chunks_total", "Chunks acknowledged by peers, by codec.", ["codec"], registry=registry)
        self.chunk_retries = Counter(
            "dwcp_transfer_chunk_retries_total", "Chunks sent again: refused checksum or lost with a connection.",
            ["reason"], registry=registry)
        self.resumes = Counter(
            "dwcp_transfer_resumes_total", "Transfers that resumed with chunks the receiver already held.",
            registry=registry)
        self.delta_saved = Counter(
            "dwcp_transfer_delta_saved_bytes_total",
            "Wire bytes a delta chunk saved against the chunk's non-delta encoding.", registry=registry)
        self.transfers = Counter(
            "dwcp_transfers_total", "Finished transfers sent by this site, by outcome (done or failed).",
            ["state"], registry=registry)
        self.transfers_active = Gauge(
            "dwcp_transfers_active", "Transfers queued or running on this site.", registry=registry)
        self.received = Counter(
            "dwcp_transfer_received_bytes_total", "Raw bytes of chunks received from peers and made durable.",
            registry=registry)
        self.peer_refused = Counter(
            "dwcp_peer_connections_refused_total", "Peer connections refused, by reason (unknown_peer, ...).",
            ["reason"], registry=registry)
        self.codec_decisions = Counter(
            "dwcp_transfer_codec_decisions_total",
            "Chunk codecs chosen, by who chose: selector or local (per sample the chooser was given), not_asked (the "
            "chooser decided locally without a call), ahead_of_selector, cpu_guard and pricing_up (per chunk).",
            ["source"], registry=registry)
        self.codec_sources = Counter(
            "dwcp_transfer_codec_sources_total",
            "Chunks (and small objects of a batch) by the codec they were given and what decided it, one count per "
            "decision: selector (its pick, kept), local (the local rule: the selector down, failing or slow), "
            "not_asked (the local rule: the payload's wire time could not pay for the call), ahead_of_selector "
            "(the local rule: the answer was not in within the chunk's wait), cpu_guard (the pricing stepped down "
            "to a lighter codec), pricing_up (the pricing stepped up to a heavier one), fixed (the transfer named "
            "its codec).", ["source", "codec"], registry=registry)
        self.pipeline_cpu = Gauge(
            "dwcp_transfer_pipeline_cpu_seconds_per_byte",
            "Thread CPU per raw byte of the pipeline to each peer (costs.py), by side (sender or receiver) and part "
            "(a codec's compressing or decoding, rest: everything else a chunk costs that side; durable_write_wall: "
            "the receiver's wall time per byte making a chunk durable, not CPU).",
            ["peer", "side", "part"], registry=registry)
        self.pipeline_share = Gauge(
            "dwcp_transfer_pipeline_cpu_share", "CPU share a sender stream thread gets while it computes.",
            ["peer"], registry=registry)
        self.link_rtt = Gauge("dwcp_link_rtt_seconds", "Measured round-trip time to each peer.", ["peer"],
                              registry=registry)
        self.link_bandwidth = Gauge(
            "dwcp_link_bandwidth_bytes_per_second", "Achievable bandwidth to each peer (probes and transfers).",
            ["peer"], registry=registry)
        self.link_tier = Gauge(
            "dwcp_link_tier", "1 for each peer's tier (datacenter <5 ms RTT, metro <50 ms, wan beyond).",
            ["peer", "tier"], registry=registry)
        # The object store (store.py): what the retention rule (keep_versions) bounds, and what it deleted.
        self.store_gauges = StoreGauges(registry)
        self.store_pruned_versions = Counter(
            "dwcp_store_pruned_versions_total", "Versions deleted by the retention rule (older than the newest "
            "keep_versions of their key).", registry=registry)
        self.store_pruned_blobs = Counter(
            "dwcp_store_pruned_blobs_total", "Blob files deleted once no kept version named them.", registry=registry)
        self.store_pruned_bytes = Counter(
            "dwcp_store_pruned_bytes_total", "Bytes of the blob files deleted by the retention rule.",
            registry=registry)
        self.routed = Counter(
            "dwcp_routed_requests_total", "Transactions and allocations routed, by target and outcome.",
            ["target", "outcome"], registry=registry)

    def watch_store(self, store: ObjectStore) -> None:
        """The store's gauges, read from its index when scraped."""
        self.store_gauges.store = store


class StoreGauges(Collector):
    """The store's gauges, from one `ObjectStore.stats` query per scrape (versions, blobs and bytes are one
    aggregate over the index; a `set_function` gauge each would run it three times). 0 until `watch_store`."""

    HELP = {
        "dwcp_store_versions": "Object versions this site's store keeps.",
        "dwcp_store_blobs": "Distinct blobs the kept versions name (content-addressed).",
        "dwcp_store_bytes": "Bytes of the blobs the kept versions name.",
        "dwcp_store_pinned_blobs": "Blobs kept past the retention rule while an unfinished transfer or a delta in "
        "progress needs them.",
    }

    def __init__(self, registry: CollectorRegistry) -> None:
        self.store: ObjectStore | None = None
        registry.register(self)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return self._families(0, 0, 0, 0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.store is None:
            return self._families(0, 0, 0, 0)
        return self._families(*self.store.stats(), self.store.pinned_blobs())

    def _families(self, versions: int, blobs: int, size: int, pinned: int) -> Iterator[GaugeMetricFamily]:
        for (name, text), value in zip(self.HELP.items(), (versions, blobs, size, pinned), strict=True):
            yield GaugeMetricFamily(name, text, value=value)
