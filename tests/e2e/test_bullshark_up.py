"""`dwcp up` with the Bullshark cluster: 4 real nodes (each a primary and its worker process) as job
bullshark-consensus, `dwcp up`'s load streaming to the workers, Prometheus, and `dwcp monitoring live`: every
answerable query over bullshark_* returns data (the seed's round-duration and throughput panels among them),
and ConsensusDown is loaded and silent while every node is up.
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

from dwcp.monitoring.live import check_live

from .conftest import free_ports, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.network, pytest.mark.slow]
N = 4


def test_up_runs_bullshark_consensus_and_its_dashboards_answer(tmp_path: Path) -> None:
    names = ["prometheus", "alertmanager", "cluster", "sink", "supervisor"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    http, consensus, worker = free_ports(N), free_ports(N), free_ports(N)
    inv = {
        "name": "e2e-bullshark",
        "supervisor": {"port": ports["supervisor"]},
        "monitoring": {
            "prometheus_port": ports["prometheus"], "alertmanager_port": ports["alertmanager"],
            "alertmanager_cluster_port": ports["cluster"], "sink_port": ports["sink"],
            "scrape_interval": "1s", "evaluation_interval": "1s",
        },
        "services": {"bullshark": {"instances": [
            {"host": "127.0.0.1", "port": h, "ports": {"consensus": c, "worker": w}}
            for h, c, w in zip(http, consensus, worker, strict=True)
        ]}},
    }
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(yaml.safe_dump(inv))
    run_dir = tmp_path / "run"
    out = open(tmp_path / "up.out", "w")  # noqa: SIM115 - closed in finally
    up = subprocess.Popen(
        [sys.executable, "-m", "dwcp", "up", "--inventory", str(inv_path), "--run-dir", str(run_dir),
         "--load-rate", "2000", "--ready-timeout", "150"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    prom = f"http://127.0.0.1:{ports['prometheus']}"
    client = httpx.Client(timeout=3.0)

    def query(expr: str) -> list[dict]:
        body = client.get(f"{prom}/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    try:
        def nodes_up():
            targets = client.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"]
            mine = [t for t in targets if t["labels"]["job"] == "bullshark-consensus"]
            return mine if len(mine) == N and all(t["health"] == "up" for t in mine) else None

        wait_for("the 4 bullshark-consensus targets up", nodes_up, timeout=180)
        wait_for("transactions committed under load", lambda: [
            r for r in query('min(bullshark_transactions_committed_total{job="bullshark-consensus"})')
            if float(r["value"][1]) > 0], timeout=120)
        empty: list[str] = []

        def live_queries_answer():
            results = check_live(prom, run_dir / "monitoring")
            empty[:] = [f"{x.where}: {x.expr}" for x in results if not x.ok]
            mine = [x for x in results if "bullshark" in x.expr and not x.skipped]
            return results if not empty and mine else None

        try:
            live = wait_for("every answerable query to return data", live_queries_answer, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still empty: {empty}") from None
        answered = [x.expr for x in live if "bullshark" in x.expr and not x.skipped]
        assert any("bullshark_round_duration_seconds" in e for e in answered), answered
        assert any("bullshark_throughput_tx_per_second" in e for e in answered), answered
        rules = client.get(f"{prom}/api/v1/rules").json()["data"]["groups"]
        alerts = {r["name"]: r for g in rules for r in g["rules"] if r["type"] == "alerting"}
        assert alerts["ConsensusDown"]["state"] == "inactive"  # every node is up
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
