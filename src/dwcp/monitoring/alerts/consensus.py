"""Alerts for the consensus clusters (ProBFT, Bullshark, T-PBFT): down, quorum lost, stalled, slow.

Stall alerts compare counters over a window with increase(); a counter's raw value only ever grows,
so the seed's `probft_quorum_achieved_total == 0` could fire only before the first quorum ever.
"""

from __future__ import annotations

from dwcp.monitoring.alerts import COUNT, Alert
from dwcp.monitoring.config import JOBS, RATE_WINDOW, SLOW_WINDOW, Scope, job_matcher, p99

PROBFT, BULLSHARK, TPBFT = JOBS["probft"], JOBS["bullshark"], JOBS["tpbft"]
QUORUM_BASELINE = 0.99  # seed: quorum achievement >99%
# Seed baselines: ProBFT finalization <1s, T-PBFT latency <60ms.
LATENCY_LIMITS = {PROBFT: ("probft_finalization_duration_seconds", 1.0),
                  TPBFT: ("tpbft_consensus_latency_seconds", 0.06)}
VIEW_CHANGES_PER_15M = 3
REJECTED_FRAMES_PER_SECOND = 1


def alerts(scope: Scope) -> list[Alert]:
    jobs = scope.consensus_jobs
    if not jobs:
        return []
    sel = job_matcher(jobs)
    found = [
        Alert(
            name="ConsensusDown",
            expr=f"up{{{sel}}} == 0",
            for_="1m",
            severity="critical",
            summary="Consensus node down: {{ $labels.instance }}",
            description="Prometheus cannot scrape {{ $labels.job }} node {{ $labels.instance }} for 1 minute; "
                        "the cluster tolerates f such nodes before it stops.",
        ),
        # BFT needs 2f+1 of n = 3f+1 replicas: floor(2n/3) + 1 is that count for every n.
        Alert(
            name="ConsensusQuorumLost",
            expr=f"sum by (job) (up{{{sel}}})\n< floor(count by (job) (up{{{sel}}}) * 2 / 3) + 1",
            for_="1m",
            severity="critical",
            summary="{{ $labels.job }} has fewer live nodes than a BFT quorum",
            description="Only {{ $value }} {{ $labels.job }} nodes are up, fewer than 2f+1: the cluster "
                        "cannot commit anything until nodes come back.",
        ),
    ]
    stalls: list[str] = []
    if scope.has(PROBFT):
        achieved = f'probft_quorum_achieved_total{{job="{PROBFT}"}}'
        attempts = f'probft_quorum_attempts_total{{job="{PROBFT}"}}'
        finalized = f'probft_blocks_finalized_total{{job="{PROBFT}"}}'
        found += [
            # Attempts without any quorum is the failure; a cluster with nothing to agree on is idle, not down.
            Alert(
                name="QuorumNotAchieved",
                expr=f"increase({achieved}[5m]) == 0\nand on (job, instance)\nincrease({attempts}[5m]) > 0",
                for_="1m",
                severity="critical",
                summary="ProBFT quorum not achieved for 5 minutes",
                description="{{ $labels.instance }} tried to gather a ProBFT quorum in the last 5 minutes and "
                            "never succeeded.",
            ),
            Alert(
                name="QuorumAchievementLow",
                expr=f"sum by (job) (increase({achieved}[{SLOW_WINDOW}]))\n/\n"
                     f"sum by (job) (increase({attempts}[{SLOW_WINDOW}])) < {QUORUM_BASELINE}",
                for_="15m",
                severity="warning",
                summary="ProBFT achieves quorum in only {{ $value | humanizePercentage }} of attempts",
                description="Over 15 minutes {{ $labels.job }} reached quorum in {{ $value | humanizePercentage }} "
                            f"of attempts; the baseline is above {QUORUM_BASELINE:.0%}.",
            ),
        ]
        # No block for 5 minutes after blocks in the last hour: stalled after progress, not idle since start.
        stalls.append(f"sum by (job) (increase({finalized}[5m])) == 0\n"
                      f"and on (job) sum by (job) (increase({finalized}[1h])) > 0")
    if scope.has(TPBFT):
        stalls.append(f'max by (job) (tpbft_pending_transactions{{job="{TPBFT}"}}) > 0\nunless on (job) '
                      f'sum by (job) (increase(tpbft_blocks_committed_total{{job="{TPBFT}"}}[5m])) > 0')
        found.append(Alert(
            name="ViewChangeStorm",
            expr=f'max by (job) (increase(tpbft_view_changes_total{{job="{TPBFT}"}}[{SLOW_WINDOW}])) '
                 f"> {VIEW_CHANGES_PER_15M}",
            for_="1m",
            severity="warning",
            summary="T-PBFT changed view " + COUNT + " times in 15 minutes",
            description="Repeated view changes in {{ $labels.job }} mean primaries keep timing out: look for "
                        "a slow or faulty group member or a partitioned network.",
        ))
    if scope.has(BULLSHARK):
        # Narwhal advances rounds on a timer even without transactions, so a flat round is a stall.
        stalls.append(f'max by (job) (delta(bullshark_round{{job="{BULLSHARK}"}}[5m])) <= 0')
    if stalls:
        found.append(Alert(
            name="ConsensusStalled",
            expr=_any(stalls),
            for_="1m",
            severity="critical",
            summary="{{ $labels.job }} is not making progress",
            description="{{ $labels.job }} made no progress for 5 minutes although it has work or was "
                        "progressing before (ProBFT: no finalized block; T-PBFT: pending transactions but no "
                        "commit; Bullshark: DAG round not advancing).",
        ))
    slow = [f"{p99(h, RATE_WINDOW, ('job',), job_matcher([job]))} > {limit}"
            for job, (h, limit) in LATENCY_LIMITS.items() if scope.has(job)]
    if slow:
        found.append(Alert(
            name="ConsensusLatencyHigh",
            expr=_any(slow),
            for_="10m",
            severity="warning",
            summary="{{ $labels.job }} P99 latency {{ $value | humanizeDuration }}",
            description="The 99th percentile consensus latency of {{ $labels.job }} over 5 minutes is "
                        "{{ $value | humanizeDuration }}, above its baseline (ProBFT finalization 1s, "
                        "T-PBFT commit 60ms).",
        ))
    found.append(Alert(
        name="ConsensusFramesRejected",
        expr=f"sum by (job, instance) (rate(dwcp_consensus_frames_rejected_total{{{sel}}}[{RATE_WINDOW}])) "
             f"> {REJECTED_FRAMES_PER_SECOND}",
        for_="5m",
        severity="warning",
        summary="{{ $labels.instance }} rejects consensus frames from peers",
        description="{{ $labels.instance }} drops {{ $value | printf \"%.1f\" }} invalid frames per second "
                    "(bad signature, codec or version): a faulty or byzantine peer, or mixed versions.",
    ))
    return found



def _any(exprs: list[str]) -> str:
    """One rule for several per-protocol conditions: each branch keeps its `job` label."""
    return exprs[0] if len(exprs) == 1 else "\nor\n".join(f"(\n{e}\n)" for e in exprs)
