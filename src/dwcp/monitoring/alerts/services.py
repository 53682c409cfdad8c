"""Alerts for every HTTP service: down, missing, slow, failing, breaker open, restarting.

The runtime gives every service the same request metrics (`dwcp_requests_total`,
`dwcp_request_duration_seconds`, `dwcp_errors_total`) and breaker gauges, so one family covers them all.
"""

from __future__ import annotations

from dwcp.monitoring.alerts import COUNT, Alert
from dwcp.monitoring.config import (
    CONSENSUS_JOBS,
    MANAGER_JOB,
    RATE_WINDOW,
    SLOW_WINDOW,
    Scope,
    job_matcher,
    p99,
    ratio,
)

LATENCY_P99_SECONDS = 0.2  # the seed's HighLatency threshold
ERROR_RATIO = 0.05
RESTARTS_PER_15M = 2
BREAKER_OPENINGS_PER_15M = 3
BREAKER_CLOSED_SHARE = 0.999


def alerts(scope: Scope) -> list[Alert]:
    found: list[Alert] = []
    jobs = scope.jobs
    if scope.has(MANAGER_JOB):
        found.append(Alert(
            name="DWCPManagerDown",
            expr=f'up{{job="{MANAGER_JOB}"}} == 0',
            for_="30s",
            severity="critical",
            summary="DWCP Manager down on {{ $labels.instance }}",
            description="Prometheus cannot scrape dwcp-manager at {{ $labels.instance }}; transfers, "
                        "transaction routing and allocation requests through it fail.",
        ))
    others = scope.other_jobs(MANAGER_JOB, *CONSENSUS_JOBS)
    if others:
        found.append(Alert(
            name="ServiceDown",
            expr=f"up{{{job_matcher(others)}}} == 0",
            for_="1m",
            severity="critical",
            summary="{{ $labels.job }} down on {{ $labels.instance }}",
            description="Prometheus cannot scrape {{ $labels.job }} at {{ $labels.instance }} for 1 minute.",
        ))
    if jobs:
        # absent() returns {job="..."} when no `up` series exists: the job lost every target.
        found.append(Alert(
            name="TargetMissing",
            expr="\nor\n".join(f'absent(up{{job="{job}"}})' for job in jobs),
            for_="2m",
            min_for="1m",
            severity="critical",
            summary="No {{ $labels.job }} targets are being scraped",
            description="Prometheus has no `up` series for job {{ $labels.job }}: its targets vanished from "
                        "the scrape configuration, so its alerts cannot fire.",
        ))
    if jobs:
        sel = job_matcher(jobs)
        found.append(Alert(
            name="HighLatency",
            expr=f"{p99('dwcp_request_duration_seconds', RATE_WINDOW, ('job',), sel)} > {LATENCY_P99_SECONDS}",
            for_="5m",
            severity="warning",
            summary="High P99 latency on {{ $labels.job }}: {{ $value | humanizeDuration }}",
            description="The 99th percentile of {{ $labels.job }} request durations over 5 minutes is "
                        f"{{{{ $value | humanizeDuration }}}}, above {LATENCY_P99_SECONDS * 1000:.0f}ms.",
        ))
        found.append(Alert(
            name="HighErrorRatio",
            expr=ratio(f'dwcp_errors_total{{{sel}, kind="server"}}', f"dwcp_requests_total{{{sel}}}",
                       RATE_WINDOW) + f" > {ERROR_RATIO}",
            for_="5m",
            severity="warning",
            summary="{{ $labels.job }} answers {{ $value | humanizePercentage }} of requests with 5xx",
            description="Server errors are {{ $value | humanizePercentage }} of {{ $labels.job }} requests "
                        f"over 5 minutes (threshold {ERROR_RATIO:.0%}).",
        ))
        found.append(Alert(
            name="CircuitBreakerOpen",
            expr=f'dwcp_circuit_breaker_state{{{sel}, state="open"}} == 1',
            for_="1m",
            severity="warning",
            summary="Circuit breaker {{ $labels.breaker }} open on {{ $labels.instance }}",
            description="{{ $labels.service }} on {{ $labels.instance }} has held breaker {{ $labels.breaker }} "
                        "open for 1 minute; calls through it fail fast. The baseline is closed 99.9% of the time.",
        ))
        found.append(Alert(
            name="CircuitBreakerFlapping",
            expr=f'increase(dwcp_circuit_breaker_transitions_total{{{sel}, to_state="open"}}[{SLOW_WINDOW}]) '
                 f"> {BREAKER_OPENINGS_PER_15M}",
            for_="0s",
            severity="warning",
            summary="Circuit breaker {{ $labels.breaker }} keeps opening on {{ $labels.instance }}",
            description="Breaker {{ $labels.breaker }} of {{ $labels.service }} opened " + COUNT + " times in "
                        "15 minutes: its dependency is failing intermittently.",
        ))
    if jobs:
        found.append(Alert(
            name="CircuitBreakerClosedShareLow",
            # One breaker's time-in-state over an hour: the seed's baseline is closed 99.9% of the time,
            # i.e. at most 3.6 s of every hour open or half-open.
            expr=ratio(f'dwcp_circuit_breaker_state_seconds_total{{{sel}, state="closed"}}',
                       f"dwcp_circuit_breaker_state_seconds_total{{{sel}}}", "1h", ("job", "breaker"))
            + f" < {BREAKER_CLOSED_SHARE}",
            for_="5m",
            severity="warning",
            summary="Breaker {{ $labels.breaker }} of {{ $labels.job }} closed only {{ $value | humanizePercentage }}",
            description="Over the last hour breaker {{ $labels.breaker }} of {{ $labels.job }} was closed "
                        "{{ $value | humanizePercentage }} of the time, below the 99.9% baseline: its dependency "
                        "keeps failing.",
        ))
    found.append(Alert(
        name="ServiceRestarting",
        expr=f"increase(dwcp_service_restarts_total[{SLOW_WINDOW}]) > {RESTARTS_PER_15M}",
        for_="0s",
        severity="warning",
        summary="{{ $labels.service }} at {{ $labels.target }} keeps crashing",
        description="The supervisor restarted {{ $labels.service }} at {{ $labels.target }} " + COUNT + " times "
                    "in 15 minutes; read its log in the run directory.",
    ))
    return found
