"""Consensus Health: finalization latency, throughput and quorum from the seed, plus liveness panels."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dwcp.monitoring.dashboards import targets as t
from dwcp.monitoring.dashboards.panels import graph, new_dashboard

TITLE = "Consensus Health"


def build(uid: str) -> Dashboard:
    return (
        new_dashboard(TITLE, uid, description="ProBFT, Bullshark and T-PBFT clusters.")
        .with_panel(graph("Block Finalization Time", t.FINALIZATION_P99, unit="s",
                          description="P99 over each interval: ProBFT finalization (<1s baseline), Bullshark round, "
                                      "T-PBFT submit-to-commit (<60ms baseline)."))
        .with_panel(graph("Throughput", t.TX_THROUGHPUT, unit="short",
                          description="Committed transactions per second (Bullshark baseline >300K tx/s)."))
        .with_panel(graph("ProBFT Blocks Finalized", [t.PROBFT_BLOCKS], unit="short",
                          description="Blocks per second; ProBFT exports blocks, not transactions."))
        .with_panel(graph("Quorum Achievement", [t.QUORUM_ACHIEVEMENT], unit="percentunit",
                          description="Share of ProBFT quorum attempts that succeeded (baseline >99%).",
                          steps=[(None, "red"), (0.99, "green")]))
        .with_panel(graph("Nodes Up", [t.CONSENSUS_NODES_UP], unit="none",
                          description="Scraped nodes per cluster; below 2f+1 the cluster cannot commit."))
        .with_panel(graph("Peers Connected", [t.PEERS_CONNECTED], unit="none",
                          description="Fewest peers any node of the cluster is connected to."))
        .with_panel(graph("T-PBFT View Changes", [t.VIEW_CHANGES], unit="none",
                          description="View changes per interval (the busiest node)."))
        .with_panel(graph("T-PBFT Pending Transactions", [t.PENDING_TX], unit="none",
                          description="Transactions waiting for a commit on the fullest node."))
        .with_panel(graph("T-PBFT Trust Scores", [t.TRUST_SCORES], unit="none",
                          description="EigenTrust score of each node, averaged over observers."))
        .with_panel(graph("Rejected Frames", [t.FRAMES_REJECTED], unit="short",
                          description="Invalid consensus frames dropped per second, by reason."))
    )
