"""`dwcp up` with the Bullshark cluster: 4 real nodes (each a primary and its worker process) as job
bullshark-consensus, `dwcp up`'s load streaming to the workers, Prometheus, and `dwcp monitoring live`: every
answerable query over bullshark_* returns data (the seed's round-duration and throughput panels among them),
and ConsensusDown is loaded and silent while every node is up.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .conftest import UpRun, free_ports, job_targets_up, prom_query, up_inventory, wait_for, wait_live_queries

pytestmark = [pytest.mark.e2e, pytest.mark.network, pytest.mark.slow]
N = 4


def test_up_runs_bullshark_consensus_and_its_dashboards_answer(tmp_path: Path) -> None:
    http, consensus, worker = free_ports(N), free_ports(N), free_ports(N)
    inv_path, prom = up_inventory(tmp_path, "e2e-bullshark", {"bullshark": {"instances": [
        {"host": "127.0.0.1", "port": h, "ports": {"consensus": c, "worker": w}}
        for h, c, w in zip(http, consensus, worker, strict=True)
    ]}})
    run_dir = tmp_path / "run"
    up = UpRun(inv_path, run_dir, tmp_path / "up.out", "--load-rate", "2000", "--ready-timeout", "150")
    client = httpx.Client(timeout=3.0)

    def query(expr: str) -> list[dict]:
        return prom_query(client, prom, expr)

    with up, client:
        wait_for("the 4 bullshark-consensus targets up",
                 lambda: job_targets_up(client, prom, "bullshark-consensus", N), timeout=180)
        wait_for("transactions committed under load", lambda: [
            r for r in query('min(bullshark_transactions_committed_total{job="bullshark-consensus"})')
            if float(r["value"][1]) > 0], timeout=120)
        live = wait_live_queries(prom, run_dir / "monitoring", timeout=120, about="bullshark")
        answered = [x.expr for x in live if "bullshark" in x.expr and not x.skipped]
        assert any("bullshark_round_duration_seconds" in e for e in answered), answered
        assert any("bullshark_throughput_tx_per_second" in e for e in answered), answered
        rules = client.get(f"{prom}/api/v1/rules").json()["data"]["groups"]
        alerts = {r["name"]: r for g in rules for r in g["rules"] if r["type"] == "alerting"}
        assert alerts["ConsensusDown"]["state"] == "inactive"  # every node is up
    assert up.code == 0
