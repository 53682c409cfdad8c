"""Prometheus metrics of the allocator service, built on the registry passed in (nothing at import)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Decisions take ~0.1-2 ms through the API; inference tens of microseconds.
ALLOCATION_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
INFERENCE_BUCKETS = (0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.1)


class AllocatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.optimization = Gauge(
            "maddpg_resource_optimization_percentage",
            "Percentage reduction of powered-on core-seconds (CPU capacity of hosts holding at least one "
            "allocation, integrated over time) of this instance's policy vs the round-robin baseline replayed "
            "in shadow on the same request stream since the database was created: 100*(1 - live/shadow). "
            "A fair win only while maddpg_sla_compliance_ratio is at least the shadow's (GET /v1/cluster).",
            registry=registry,
        )
        self.successful = Counter(
            "maddpg_successful_allocations", "Allocation requests that were placed on a host.", registry=registry
        )
        self.total = Counter(
            "maddpg_total_allocations",
            "Allocation requests that reached a decision (placed or refused for lack of capacity).",
            registry=registry,
        )
        self.allocation_duration = Histogram(
            "maddpg_allocation_duration_seconds",
            "Time from an allocation request entering the handler to its decision being stored.",
            buckets=ALLOCATION_BUCKETS, registry=registry,
        )
        self.inference_duration = Histogram(
            "maddpg_inference_duration_seconds", "Time of one policy decision (feature build + forward pass).",
            buckets=INFERENCE_BUCKETS, registry=registry,
        )
        self.sla_compliance = Gauge(
            "maddpg_sla_compliance_ratio",
            "Share of allocation decisions that placed the workload (a refusal misses its SLA), 0..1.",
            registry=registry,
        )
        self.active = Gauge("maddpg_active_allocations", "Allocations currently placed.", registry=registry)
