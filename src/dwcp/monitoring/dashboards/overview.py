"""DWCP Systems Overview: the seed's four panels with corrected queries, plus breakers and restarts."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dwcp.monitoring.dashboards import targets as t
from dwcp.monitoring.dashboards.panels import graph, new_dashboard, single

TITLE = "DWCP Systems Overview"


def build(uid: str) -> Dashboard:
    return (
        new_dashboard(TITLE, uid, description="Health, traffic, latency and errors of every DWCP service.",
                      job_variable=True)
        .with_panel(single("Service Health", [t.SERVICE_HEALTH], unit="none", width=24,
                           description="Targets up per job (Prometheus `up`).", steps=[(None, "red"), (1, "green")]))
        .with_panel(graph("Request Rate", [t.REQUEST_RATE], unit="reqps", description="Requests per second by job."))
        .with_panel(graph("P99 Latency", [t.P99_LATENCY], unit="s",
                          description="99th percentile of request duration over each interval (rate of buckets).",
                          steps=[(None, "green"), (0.2, "red")]))
        .with_panel(graph("Error Rate", [t.ERROR_RATE], unit="reqps",
                          description="Errors per second by job and kind (client = 4xx, server = 5xx)."))
        .with_panel(graph("Server Error Ratio", [t.ERROR_RATIO], unit="percentunit",
                          description="Share of requests answered with 5xx; HighErrorRatio fires above 5%.",
                          steps=[(None, "green"), (0.05, "red")]))
        .with_panel(graph("Circuit Breakers Open", [t.BREAKERS_OPEN], unit="none",
                          description="Breakers currently open; the baseline is closed 99.9% of the time."))
        .with_panel(graph("Circuit Breakers Closed Share", [t.BREAKERS_CLOSED_SHARE], unit="percentunit",
                          description="Share of time each breaker spent closed (time-in-state counters); the "
                                      "baseline is 99.9%.", steps=[(None, "red"), (0.999, "green")]))
        .with_panel(graph("Service Restarts (1h)", [t.RESTARTS], unit="none",
                          description="Crashed processes the `dwcp up` supervisor restarted in the last hour."))
        .with_panel(graph("Manager Object Store", [t.STORE_BYTES, t.STORE_PRUNED], unit="bytes",
                          description="Bytes each manager site's store keeps (the newest `keep_versions` versions "
                                      "of every key) and bytes per second its retention rule deletes: flat when "
                                      "the rule holds the store, rising when it does not."))
    )
