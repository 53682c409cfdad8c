"""Recording rules, named `level:metric:operation` like node-mixin's rules.libsonnet.

`level` is the labels kept (job), `metric` the source metric without _total/_bucket, `operation` what was
done to it (rate5m, p99_rate5m, ratio_rate5m...). They feed long-range queries and SLO reports; alerts
use the raw expressions so each alert's promtool test needs no rule-evaluation ordering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dwcp.monitoring.config import RATE_WINDOW, p99, ratio


@dataclass(frozen=True, slots=True)
class Recording:
    record: str
    expr: str
    why: str  # the rule's comment, kept with the data so docs can list it

    def rule(self) -> dict[str, Any]:
        return {"record": self.record, "expr": self.expr}


def _p99(histogram: str) -> Recording:
    return Recording(f"job:{histogram}:p99_rate5m", p99(histogram, RATE_WINDOW),
                     f"99th percentile of {histogram} over 5 minutes, per job")


RECORDINGS: tuple[Recording, ...] = (
    Recording("job:up:ratio", "avg by (job) (up)", "share of a job's targets that are up (1 = all)"),
    Recording("job:dwcp_requests:rate5m", f"sum by (job) (rate(dwcp_requests_total[{RATE_WINDOW}]))",
              "requests per second served by each job"),
    Recording("job:dwcp_server_errors:ratio_rate5m",
              ratio('dwcp_errors_total{kind="server"}', "dwcp_requests_total", RATE_WINDOW),
              "share of requests answered with 5xx; both sides summed by job so their label sets match"),
    _p99("dwcp_request_duration_seconds"),
    _p99("compression_selector_prediction_duration_seconds"),
    _p99("probft_finalization_duration_seconds"),
    _p99("bullshark_round_duration_seconds"),
    _p99("tpbft_consensus_latency_seconds"),
    _p99("maddpg_allocation_duration_seconds"),
    Recording("job:dwcp_circuit_breaker_closed:ratio_avg_over_time1h",
              'avg by (job) (avg_over_time(dwcp_circuit_breaker_state{state="closed"}[1h]))',
              "share of the last hour breakers spent closed; the seed's baseline is 99.9%"),
    Recording("job:dwcp_circuit_breaker_closed_seconds:ratio_rate1h",
              ratio('dwcp_circuit_breaker_state_seconds_total{state="closed"}',
                    "dwcp_circuit_breaker_state_seconds_total", "1h", ("job", "breaker")),
              "share of the last hour each breaker spent closed, from its time-in-state counter"),
    Recording("job:probft_quorum_achievement:ratio_rate5m",
              ratio("probft_quorum_achieved_total", "probft_quorum_attempts_total", RATE_WINDOW),
              "share of ProBFT quorum attempts that succeeded; the seed's baseline is above 99%"),
    Recording("job:probft_blocks_finalized:rate5m",
              f"sum by (job) (rate(probft_blocks_finalized_total[{RATE_WINDOW}])) / count by (job) "
              "(probft_blocks_finalized_total)",
              "blocks per second the cluster finalizes (per-node rates averaged: every node finalizes each block)"),
    Recording("job:tpbft_transactions_committed:rate5m",
              f"max by (job) (rate(tpbft_transactions_committed_total[{RATE_WINDOW}]))",
              "transactions per second the T-PBFT cluster commits (max over nodes: each node counts every commit)"),
    Recording("job:maddpg_allocation_success:ratio_rate5m",
              ratio("maddpg_successful_allocations_total", "maddpg_total_allocations_total", RATE_WINDOW),
              "share of allocation requests that succeeded"),
)


def rule_groups() -> list[dict[str, Any]]:
    return [{"name": "dwcp_recording", "rules": [r.rule() for r in RECORDINGS]}]
