"""Bullshark's metrics of one node (`bullshark_*`), fed by the driver with `Primary.status()` snapshots.

The seed's two names are exact: `bullshark_round_duration_seconds` (histogram of DAG round time at
this primary) and `bullshark_throughput_tx_per_second` (committed transactions per second over a
sliding window). The worker's own counters (batches sealed, bytes) arrive from the worker process
through the node's worker link and are set on `WorkerMetrics` (same registry).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dwcp.consensus.bullshark.progress import samples_since

ROUND_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
THROUGHPUT_WINDOW = 10.0  # seconds


class Metrics:
    def __init__(self, registry: CollectorRegistry, clock=time.monotonic) -> None:
        self.clock = clock
        self.round_duration = Histogram(
            "bullshark_round_duration_seconds", "Seconds per DAG round at this primary (between its headers).",
            buckets=ROUND_BUCKETS, registry=registry)
        self.throughput = Gauge(
            "bullshark_throughput_tx_per_second",
            f"Transactions committed per second by this node over the last {THROUGHPUT_WINDOW:.0f} s.",
            registry=registry)
        self.transactions = Counter(
            "bullshark_transactions_committed_total", "Transactions in sub-DAGs this node has durably committed.",
            registry=registry)
        self.round = Gauge("bullshark_round", "The DAG round of this primary's newest header.", registry=registry)
        self.certificates = Counter(
            "bullshark_certificates_created_total", "Certificates of availability this primary has formed.",
            registry=registry)
        self.batches = Counter(
            "bullshark_batches_committed_total", "Batches in sub-DAGs this node has durably committed.",
            registry=registry)
        self.subdags = Counter(
            "bullshark_subdags_committed_total", "Committed sub-DAGs (heights) of this node's log.", registry=registry)
        self.dag_size = Gauge("bullshark_dag_certificates", "Certificates this primary holds in its DAG.",
                              registry=registry)
        self.height = Gauge("bullshark_committed_height", "Newest durable height of this node's log.",
                            registry=registry)
        self.latency = Histogram(
            "bullshark_consensus_latency_seconds",
            "Seconds from this primary forming a certificate to the anchor that orders it.",
            buckets=LATENCY_BUCKETS, registry=registry)
        self._seen: dict[str, int] = {"round_durations": 0, "commit_latencies": 0}
        self._last: dict[str, int] = {}
        self._window: deque[tuple[float, int]] = deque()
        self._txs = 0

    def committed(self, height: int, txs: int, latencies: list[float]) -> None:
        self.height.set(height)

    def _count(self, counter: Counter, status: dict[str, Any], key: str) -> int:
        value = int(status.get(key, 0))
        delta = value - self._last.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._last[key] = value
        return max(delta, 0)

    def update(self, status: dict[str, Any]) -> None:
        self.round.set(status.get("round", 0))
        self.dag_size.set(status.get("dag_size", 0))
        if "height" in status:
            self.height.set(status["height"])
        self._count(self.certificates, status, "certificates_created")
        self._count(self.batches, status, "batches_committed")
        self._count(self.subdags, status, "subdags_committed")
        self._txs += self._count(self.transactions, status, "txs_committed")
        samples = status.get("samples", {})
        for key, histogram in (("round_durations", self.round_duration), ("commit_latencies", self.latency)):
            if key in samples:
                for value in samples_since(samples[key], self._seen[key]):
                    histogram.observe(value)
                self._seen[key] = samples[key][0]
        now = self.clock()
        self._window.append((now, self._txs))
        while len(self._window) > 2 and now - self._window[1][0] >= THROUGHPUT_WINDOW:
            self._window.popleft()
        (t0, n0), (t1, n1) = self._window[0], self._window[-1]
        self.throughput.set((n1 - n0) / (t1 - t0) if t1 > t0 else 0.0)


# The worker's running total -> (counter, help). The worker process reports totals (dataplane.Dataplane.totals).
WORKER_TOTALS = {
    "sealed": ("bullshark_batches_sealed_total", "Batches this node's worker sealed."),
    "sealed_bytes": ("bullshark_batch_bytes_sealed_total", "Bytes of batches this node's worker sealed."),
    "received_txs": ("bullshark_worker_transactions_received_total", "Client transactions this node's worker "
                     "received."),
    "stored": ("bullshark_worker_batches_stored_total", "Batches this node's worker stored (its own and its peers')."),
    "skipped": ("bullshark_worker_batches_skipped_total", "Own batches a backed-up or down peer link did not take "
                "when sealed (sent later or fetched by that peer)."),
    "requested": ("bullshark_worker_batch_requests_total", "Batches this node's worker asked its peers for "
                  "(missing when its primary needed them)."),
    "served": ("bullshark_worker_batches_served_total", "Batches this node's worker sent in answer to peers' "
               "requests."),
    "duplicates": ("bullshark_worker_duplicate_batches_total", "Batches this node's worker received that it "
                   "already stored."),
    "paused_us": ("bullshark_worker_clients_paused_microseconds_total", "Time this node's worker did not read its "
                  "clients because max_inflight_batches of its batches waited for a quorum (flow control)."),
    "quorum_batches": ("bullshark_worker_batches_acknowledged_total", "Own batches 2f+1 workers acknowledged."),
    "quorum_wait_us": ("bullshark_worker_quorum_wait_microseconds_total", "Summed time from sealing an own batch "
                       "to its 2f+1-th acknowledgement (divide by batches acknowledged for the mean)."),
}


class WorkerMetrics:
    """What the worker process reports over the link to its primary (monotonic totals)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counters = {key: Counter(name, doc, registry=registry) for key, (name, doc) in WORKER_TOTALS.items()}
        self._last: dict[str, int] = {}

    def report(self, totals: dict[str, int]) -> None:
        for key, counter in self.counters.items():
            value = int(totals.get(key, 0))
            delta = value - self._last.get(key, 0) if value >= self._last.get(key, 0) else value  # worker restart
            if delta > 0:
                counter.inc(delta)
            self._last[key] = value
