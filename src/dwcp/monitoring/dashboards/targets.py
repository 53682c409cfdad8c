"""Named PromQL for the dashboards (the etcd mixin's targets.libsonnet).

Every rate uses Grafana's `$__rate_interval` (at least four scrape intervals, so never an empty window),
every quantile is histogram_quantile over `sum by (job, le) (rate(..._bucket[...]))`, and every ratio
reduces both sides to the same labels before dividing. `$job` is the Overview's job variable.
"""

from __future__ import annotations

from dataclasses import dataclass

from dwcp.monitoring.config import CONSENSUS_JOBS, DASHBOARD_WINDOW, JOBS, job_matcher, p99, ratio

W = DASHBOARD_WINDOW
ALL_JOBS = job_matcher(JOBS.values())
CONSENSUS = job_matcher(CONSENSUS_JOBS)
VAR_JOB = 'job=~"$job"'


@dataclass(frozen=True, slots=True)
class Target:
    expr: str
    legend: str


# DWCP Overview
SERVICE_HEALTH = Target(f"sum by (job) (up{{{ALL_JOBS}, {VAR_JOB}}})", "{{job}}")
REQUEST_RATE = Target(f"sum by (job) (rate(dwcp_requests_total{{{VAR_JOB}}}[{W}]))", "{{job}}")
P99_LATENCY = Target(p99("dwcp_request_duration_seconds", W, ("job",), VAR_JOB), "{{job}}")
ERROR_RATE = Target(f"sum by (job, kind) (rate(dwcp_errors_total{{{VAR_JOB}}}[{W}]))", "{{job}} {{kind}}")
# A job that never answered 5xx has no server-error series; `or 0 * requests` draws it at 0, not as no data.
ERROR_RATIO = Target(ratio(f'dwcp_errors_total{{{VAR_JOB}, kind="server"}}', f"dwcp_requests_total{{{VAR_JOB}}}", W)
                     + f"\nor\n0 * sum by (job) (rate(dwcp_requests_total{{{VAR_JOB}}}[{W}]))", "{{job}}")
BREAKERS_OPEN = Target(f'sum by (job, breaker) (dwcp_circuit_breaker_state{{{VAR_JOB}, state="open"}})',
                       "{{job}} {{breaker}}")
# Time-in-state counters: closed seconds over all seconds is "closed 99.9% of the time" directly, with no
# sampling of the state gauge between scrapes.
BREAKERS_CLOSED_SHARE = Target(ratio(f'dwcp_circuit_breaker_state_seconds_total{{{VAR_JOB}, state="closed"}}',
                                     f"dwcp_circuit_breaker_state_seconds_total{{{VAR_JOB}}}", W, ("job", "breaker")),
                               "{{job}} {{breaker}}")
RESTARTS = Target("sum by (service) (increase(dwcp_service_restarts_total[1h]))", "{{service}}")
# Each manager site's object store, bounded by its `keep_versions` rule (docs/manager.md, "Retention").
STORE_BYTES = Target(f"sum by (instance) (dwcp_store_bytes{{{VAR_JOB}}})", "{{instance}} kept")
STORE_PRUNED = Target(f"sum by (instance) (rate(dwcp_store_pruned_bytes_total{{{VAR_JOB}}}[{W}]))",
                      "{{instance}} pruned /s")

# Consensus Health
FINALIZATION_P99 = (
    Target(p99("probft_finalization_duration_seconds", W), "ProBFT finalization"),
    Target(p99("bullshark_round_duration_seconds", W), "Bullshark round"),
    Target(p99("tpbft_consensus_latency_seconds", W), "T-PBFT submit to commit"),
)
# Each node counts every commit, so the cluster's throughput is the per-node average, not the sum.
TX_THROUGHPUT = (
    Target("avg by (job) (bullshark_throughput_tx_per_second)", "Bullshark"),
    Target(f"avg by (job) (rate(tpbft_transactions_committed_total[{W}]))", "T-PBFT"),
)
PROBFT_BLOCKS = Target(f"avg by (job) (rate(probft_blocks_finalized_total[{W}]))", "ProBFT")
QUORUM_ACHIEVEMENT = Target(ratio("probft_quorum_achieved_total", "probft_quorum_attempts_total", W), "{{job}}")
CONSENSUS_NODES_UP = Target(f"sum by (job) (up{{{CONSENSUS}}})", "{{job}}")
VIEW_CHANGES = Target(f"max by (job) (increase(tpbft_view_changes_total[{W}]))", "view changes")
TRUST_SCORES = Target("avg by (node) (tpbft_trust_score)", "{{node}}")
PENDING_TX = Target("max by (job) (tpbft_pending_transactions)", "pending")
PEERS_CONNECTED = Target("min by (job) (dwcp_consensus_peers_connected)", "{{job}} (least connected node)")
FRAMES_REJECTED = Target(f"sum by (job, reason) (rate(dwcp_consensus_frames_rejected_total[{W}]))",
                         "{{job}} {{reason}}")

# ML Systems
SELECTOR_ACCURACY = Target("compression_selector_accuracy", "{{instance}}")
PREDICTION_P99 = Target(p99("compression_selector_prediction_duration_seconds", W), "P99")
PREDICTIONS_BY_CODEC = Target(f"sum by (codec) (rate(compression_selector_predictions_total[{W}]))", "{{codec}}")
OPTIMIZATION = Target("maddpg_resource_optimization_percentage", "{{instance}}")
ALLOCATION_SUCCESS = Target(ratio("maddpg_successful_allocations_total", "maddpg_total_allocations_total", W,
                                  by=("job", "instance")), "{{instance}}")
SLA_COMPLIANCE = Target("maddpg_sla_compliance_ratio", "{{instance}}")
ALLOCATOR_P99 = (
    Target(p99("maddpg_allocation_duration_seconds", W), "allocation P99"),
    Target(p99("maddpg_inference_duration_seconds", W), "inference P99"),
)
