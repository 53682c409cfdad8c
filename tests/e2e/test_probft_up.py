"""`dwcp up` with the ProBFT cluster: 7 real nodes as job probft-consensus, load, Prometheus, and
`dwcp monitoring live`: every Consensus Health query and recording rule over probft_* answers, and the
QuorumNotAchieved alert is loaded and silent while quorums are reached.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import free_ports, job_targets_up, prom_query, wait_for, wait_live_queries

pytestmark = [pytest.mark.e2e, pytest.mark.network, pytest.mark.slow]
N = 7


def test_up_runs_probft_consensus_and_its_dashboards_answer(tmp_path: Path) -> None:
    names = ["prometheus", "alertmanager", "cluster", "sink", "supervisor"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    http, consensus = free_ports(N), free_ports(N)
    inv = {
        "name": "e2e-probft",
        "supervisor": {"port": ports["supervisor"]},
        "monitoring": {
            "prometheus_port": ports["prometheus"], "alertmanager_port": ports["alertmanager"],
            "alertmanager_cluster_port": ports["cluster"], "sink_port": ports["sink"],
            "scrape_interval": "1s", "evaluation_interval": "1s",
        },
        "services": {"probft": {"instances": [
            {"host": "127.0.0.1", "port": h, "ports": {"consensus": c}} for h, c in zip(http, consensus, strict=True)
        ]}},
    }
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(yaml.safe_dump(inv))
    run_dir = tmp_path / "run"
    out = open(tmp_path / "up.out", "w")  # noqa: SIM115 - closed in finally
    up = subprocess.Popen(
        [sys.executable, "-m", "dwcp", "up", "--inventory", str(inv_path), "--run-dir", str(run_dir),
         "--load-rate", "20", "--ready-timeout", "150"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    prom = f"http://127.0.0.1:{ports['prometheus']}"
    client = httpx.Client(timeout=3.0)

    def query(expr: str) -> list[dict]:
        return prom_query(client, prom, expr)

    try:
        wait_for("the 7 probft-consensus targets up",
                 lambda: job_targets_up(client, prom, "probft-consensus", N), timeout=180)
        wait_for("blocks finalized under load", lambda: [
            r for r in query('sum(probft_blocks_finalized_total{job="probft-consensus"})')
            if float(r["value"][1]) > 0], timeout=90)
        live = wait_live_queries(prom, run_dir / "monitoring", timeout=120, about="probft")
        answered = [x.expr for x in live if "probft" in x.expr and not x.skipped]
        assert any("probft_finalization_duration_seconds" in e for e in answered), answered
        assert any("probft_blocks_finalized_total" in e for e in answered), answered
        assert any("probft_quorum_achieve" in e for e in answered), answered
        rate = query('min(probft_quorum_achievement_rate{job="probft-consensus"})')
        assert rate and float(rate[0]["value"][1]) >= 0.99

        def quorum_alert_state() -> str:
            rules = client.get(f"{prom}/api/v1/rules").json()["data"]["groups"]
            return {r["name"]: r for g in rules for r in g["rules"] if r["type"] == "alerting"}[
                "QuorumNotAchieved"]["state"]

        # Quorums are being reached. A node whose first attempt was scraped before its first quorum reads as
        # "attempted, none achieved" for a scrape or two, so the rule may be pending briefly at the start (its
        # `for` is 1m); it must clear within 50 s, before that `for` could make it fire.
        wait_for("QuorumNotAchieved inactive", lambda: quorum_alert_state() == "inactive", timeout=50)
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            code = up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            code = up.wait()
        out.close()
        client.close()
        print((tmp_path / "up.out").read_text()[-4000:])
    assert code == 0
