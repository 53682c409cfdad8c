"""Job names, selectors, rate windows and the metric catalog every query is built from.

Like the etcd mixin's config.libsonnet: no alert, rule or panel spells a job name or a window as a
literal; they ask this module, so a renamed job or a wider window changes in one place. Metric names
mirror the catalog in docs/contracts.md (a test keeps them in step).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dwcp.runtime.services import SERVICE_KINDS

# Inventory key -> Prometheus job, in the seed's order (the order files are rendered in).
JOBS: dict[str, str] = {key: kind.job for key, kind in SERVICE_KINDS.items()}
MANAGER_JOB = JOBS["manager"]
CONSENSUS_KEYS = ("probft", "bullshark", "tpbft")
CONSENSUS_JOBS = tuple(JOBS[k] for k in CONSENSUS_KEYS)

RATE_WINDOW = "5m"  # alerts and recording rules; dashboards use $__rate_interval instead
SLOW_WINDOW = "15m"  # ratios and counts that need more samples to be stable
DASHBOARD_WINDOW = "$__rate_interval"

# The metric catalog (docs/contracts.md). Histograms are listed by base name; PromQL uses _bucket/_sum/_count.
HISTOGRAMS = frozenset({
    "dwcp_request_duration_seconds",
    "compression_selector_prediction_duration_seconds",
    "compression_selector_prediction_cpu_seconds",
    "tpbft_consensus_latency_seconds",
    "probft_finalization_duration_seconds",
    "bullshark_round_duration_seconds",
    "maddpg_allocation_duration_seconds",
    "maddpg_inference_duration_seconds",
})
COUNTERS = frozenset({
    "dwcp_requests_total", "dwcp_errors_total", "dwcp_circuit_breaker_transitions_total",
    "dwcp_service_restarts_total", "compression_selector_predictions_total",
    "compression_selector_shadow_evaluations_total", "tpbft_transactions_committed_total",
    "tpbft_blocks_committed_total", "tpbft_view_changes_total", "dwcp_consensus_messages_sent_total",
    "dwcp_consensus_messages_received_total", "dwcp_consensus_frames_rejected_total",
    "probft_quorum_achieved_total", "probft_quorum_attempts_total", "probft_blocks_finalized_total",
    "bullshark_transactions_committed_total", "maddpg_successful_allocations_total",
    "maddpg_total_allocations_total",
})
GAUGES = frozenset({
    "up", "dwcp_circuit_breaker_state", "dwcp_service_process_running", "compression_selector_accuracy",
    "tpbft_committed_height", "tpbft_view", "tpbft_group_member", "tpbft_trust_score",
    "tpbft_pending_transactions", "dwcp_consensus_peers_connected", "probft_quorum_achievement_rate",
    "bullshark_throughput_tx_per_second", "bullshark_round", "maddpg_resource_optimization_percentage",
    "maddpg_sla_compliance_ratio", "maddpg_active_allocations",
})
CATALOG = HISTOGRAMS | COUNTERS | GAUGES


@dataclass(frozen=True, slots=True)
class Scope:
    """What is being monitored: the jobs that have targets, in render order."""

    jobs: tuple[str, ...]

    @classmethod
    def all(cls) -> Scope:
        return cls(tuple(JOBS.values()))

    def has(self, job: str) -> bool:
        return job in self.jobs

    @property
    def consensus_jobs(self) -> tuple[str, ...]:
        return tuple(j for j in self.jobs if j in CONSENSUS_JOBS)

    def other_jobs(self, *exclude: str) -> tuple[str, ...]:
        return tuple(j for j in self.jobs if j not in exclude)


def job_matcher(jobs: Iterable[str]) -> str:
    """`job="a"` for one job, `job=~"a|b"` for several (job names contain no regex metacharacters)."""
    names = list(jobs)
    if not names:
        raise ValueError("a job matcher needs at least one job")
    return f'job="{names[0]}"' if len(names) == 1 else f'job=~"{"|".join(names)}"'


def selector(metric: str, *matchers: str) -> str:
    inner = ", ".join(m for m in matchers if m)
    return f"{metric}{{{inner}}}" if inner else metric


def p99(histogram: str, window: str, by: Iterable[str] = ("job",), *matchers: str) -> str:
    """The 99th percentile over the last `window`: quantile of summed per-bucket rates, grouped by `by` and le.

    A bare histogram_quantile over cumulative `_bucket` counters measures everything since the process
    started, so an old fast majority hides a slow present; rate() first, then sum away instance labels.
    """
    if histogram not in HISTOGRAMS:
        raise KeyError(f"{histogram} is not a histogram in the metric catalog")
    groups = ", ".join([*by, "le"])
    return (f"histogram_quantile(0.99, sum by ({groups}) "
            f"(rate({selector(histogram + '_bucket', *matchers)}[{window}])))")


def ratio(numerator: str, denominator: str, window: str, by: Iterable[str] = ("job",)) -> str:
    """sum-by(numerator rate) / sum-by(denominator rate): both sides reduced to the same label set."""
    groups = ", ".join(by)
    return (f"sum by ({groups}) (rate({numerator}[{window}]))\n"
            f"/\nsum by ({groups}) (rate({denominator}[{window}]))")
