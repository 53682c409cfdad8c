"""ML Systems Performance: the seed's four panels with corrected queries, plus SLA and latency."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dwcp.monitoring.dashboards import targets as t
from dwcp.monitoring.dashboards.panels import graph, new_dashboard

TITLE = "ML Systems Performance"


def build(uid: str) -> Dashboard:
    return (
        new_dashboard(TITLE, uid, description="Compression selector and MADDPG allocator.")
        .with_panel(graph("Compression Selector Accuracy", [t.SELECTOR_ACCURACY], unit="percentunit",
                          description="Rolling near-best share of shadow evaluations (baseline >99.5%).",
                          steps=[(None, "red"), (0.95, "orange"), (0.995, "green")]))
        .with_panel(graph("Prediction Latency", [t.PREDICTION_P99], unit="s",
                          description="P99 selector prediction time (baseline <10ms).",
                          steps=[(None, "green"), (0.01, "red")]))
        .with_panel(graph("Predictions by Codec", [t.PREDICTIONS_BY_CODEC], unit="reqps",
                          description="Which codec the selector picks, per second."))
        .with_panel(graph("MADDPG Optimization", [t.OPTIMIZATION], unit="percent",
                          description="Resources saved against the baseline policy (baseline >25%).",
                          steps=[(None, "red"), (25, "green")]))
        .with_panel(graph("Allocation Success Rate", [t.ALLOCATION_SUCCESS], unit="percentunit",
                          description="Successful / all allocation requests, both summed by job and instance."))
        .with_panel(graph("SLA Compliance", [t.SLA_COMPLIANCE], unit="percentunit",
                          description="Share of allocations meeting their SLA (baseline >95%).",
                          steps=[(None, "red"), (0.95, "green")]))
        .with_panel(graph("Allocation and Inference Latency", t.ALLOCATOR_P99, unit="s",
                          description="P99 allocation (<50ms baseline) and model inference (<100ms baseline)."))
    )
