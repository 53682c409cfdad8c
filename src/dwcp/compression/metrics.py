"""Compression selector metrics; built from a registry, nothing registered at import."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dwcp.compression.codecs import KEYS

# Feature extraction plus model inference takes tens of microseconds; the seed's budget is 10 ms.
PREDICTION_BUCKETS = (2.5e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2.5e-2, 0.1)


class _AccuracyCollector(Collector):
    """Exports the rolling accuracy only once there is a shadow evaluation to base it on.

    A plain Gauge would read 0 before the first evaluation, which looks like a broken model to the
    ModelAccuracyDrop alert rather than like "not measured yet".
    """

    def __init__(self, read: Callable[[], float | None]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value = self.read()
        if value is not None:
            yield GaugeMetricFamily(
                "compression_selector_accuracy",
                "Share of recent shadow-evaluated requests whose chosen option was within 5% of the oracle's best.",
                value=value,
            )

    def describe(self) -> list:
        return []


class CompressionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.prediction_duration = Histogram(
            "compression_selector_prediction_duration_seconds",
            "Time to choose an option for one payload: feature extraction and model inference (not HTTP).",
            buckets=PREDICTION_BUCKETS, registry=registry,
        )
        # The same span in this thread's CPU time. Why: on a crowded host the wall-clock p99 is mostly time
        # spent waiting for a CPU (2026-12-05, 2 cores with 4 busy loops beside: wall p99 20 ms, CPU p99
        # 0.9 ms); this one says whether a slow p99 is the model's work or the host's queue.
        self.prediction_cpu = Histogram(
            "compression_selector_prediction_cpu_seconds",
            "CPU time (this thread's) of the same span as compression_selector_prediction_duration_seconds: "
            "its wall time minus this is time spent waiting for a CPU or the GIL.",
            buckets=PREDICTION_BUCKETS, registry=registry,
        )
        self.predictions = Counter(
            "compression_selector_predictions_total",
            "Options chosen, by option (codec and level, e.g. zstd-3).",
            ["codec"], registry=registry,
        )
        self.shadow_evaluations = Counter(
            "compression_selector_shadow_evaluations_total",
            "Live requests re-scored by the oracle off the request path.",
            registry=registry,
        )
        # Children resolved once: a labels() lookup per request costs more than the inference does.
        self.by_option = [self.predictions.labels(k) for k in KEYS]

    def export_accuracy(self, read: Callable[[], float | None]) -> None:
        """Serve `compression_selector_accuracy` from `read` (the shadow evaluator's rolling accuracy)."""
        self.registry.register(_AccuracyCollector(read))

    def chosen(self, options: Sequence[int], seconds: float, cpu_seconds: float) -> None:
        """One call's choices (option indices) and the wall and CPU time features and model took for all."""
        share, cpu_share = seconds / len(options), cpu_seconds / len(options)
        for i in options:  # one observation per payload: batches report the per-item share
            self.prediction_duration.observe(share)
            self.prediction_cpu.observe(cpu_share)
            self.by_option[i].inc()

    def shadow_evaluated(self, _score: object) -> None:
        self.shadow_evaluations.inc()
