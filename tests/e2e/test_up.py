"""`dwcp up` end to end: a real compression-api, real Prometheus and Alertmanager, a real crash.

Starts `dwcp up` with a small inventory (one compression-api instance, fast scrape/evaluation, alert
`for:` overridden), waits for Prometheus to see every target up, reads a seed metric through the
Prometheus API, kills the service with SIGKILL, and checks that the supervisor counts the crash and
restarts it and that the down alert travels Prometheus → Alertmanager → the local webhook sink.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import free_ports, prom_query, wait_for, wait_live_queries

pytestmark = [pytest.mark.e2e, pytest.mark.network, pytest.mark.slow]


def _inventory(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    names = ["compression", "prometheus", "alertmanager", "cluster", "sink", "supervisor"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    inv = {
        "name": "e2e",
        # Restart after 5 s, not 1 s: the outage must outlast Alertmanager's group_wait, or the firing and
        # the resolve land in one flush and Alertmanager (rightly) notifies nobody.
        "supervisor": {"port": ports["supervisor"], "restart_backoff_s": 5},
        "monitoring": {
            "prometheus_port": ports["prometheus"], "alertmanager_port": ports["alertmanager"],
            "alertmanager_cluster_port": ports["cluster"], "sink_port": ports["sink"],
            "scrape_interval": "1s", "evaluation_interval": "1s", "alert_for_override": "0s",
            "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h", "resolve_timeout": "1m",
        },
        "services": {"compression": {"instances": [{"host": "127.0.0.1", "port": ports["compression"]}]}},
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path, ports


def test_up_scrapes_restarts_and_alerts(tmp_path: Path) -> None:
    inv_path, ports = _inventory(tmp_path)
    run_dir = tmp_path / "run"
    out = open(tmp_path / "up.out", "w")  # noqa: SIM115 - closed in finally, read on failure
    up = subprocess.Popen(
        [sys.executable, "-m", "dwcp", "up", "--inventory", str(inv_path), "--run-dir", str(run_dir),
         "--load-rate", "5", "--ready-timeout", "150"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    prom = f"http://127.0.0.1:{ports['prometheus']}"
    service = f"http://127.0.0.1:{ports['compression']}"
    client = httpx.Client(timeout=3.0)

    def query(expr: str) -> list[dict]:
        return prom_query(client, prom, expr)

    try:
        def all_targets_up():
            targets = client.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"]
            jobs = {t["labels"]["job"] for t in targets}
            return targets if jobs >= {"compression-api", "dwcp-supervisor"} and all(
                t["health"] == "up" for t in targets) else None

        wait_for("every Prometheus target up", all_targets_up, timeout=180)

        # A seed metric, read back through Prometheus, with the load generator's predictions in it.
        series = wait_for("compression predictions in Prometheus", lambda: [
            r for r in query('compression_selector_prediction_duration_seconds_count{job="compression-api"}')
            if float(r["value"][1]) > 0], timeout=60)
        assert series[0]["metric"]["instance"] == f"127.0.0.1:{ports['compression']}"
        # The load generator writes with the token `dwcp up` made (0600); nobody was refused.
        assert stat.S_IMODE((run_dir / "secrets" / "http-token").stat().st_mode) == 0o600
        assert not [r for r in query('dwcp_requests_total{code="401"}') if float(r["value"][1]) > 0]
        assert client.post(f"{service}/v1/predict", json={}).status_code == 401

        # Every dashboard query and recording rule over what this system exports returns data.
        live = wait_live_queries(prom, run_dir / "monitoring", timeout=60)
        answered = {x.where for x in live if not x.skipped}
        assert {"dwcp-ml: Prediction Latency/A", "dwcp-ml: Predictions by Codec/A",
                "dwcp-overview: Request Rate/A", "dwcp-overview: Service Restarts (1h)/A"} <= answered
        assert any(x.where.startswith("dwcp-consensus") and x.skipped for x in live)  # no consensus here

        status = subprocess.run([sys.executable, "-m", "dwcp", "status", "--inventory", str(inv_path)],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "compression-api" in status.stdout and "dwcp-supervisor" in status.stdout

        old_pid = client.get(f"{service}/health").json()["pid"]
        os.kill(old_pid, signal.SIGKILL)

        new_pid = wait_for("the service to come back with a new pid", lambda: (
            (pid := client.get(f"{service}/health").json()["pid"]) != old_pid and pid), timeout=60)
        assert new_pid != old_pid

        restarts = wait_for("the restart counted in Prometheus", lambda: [
            r for r in query('dwcp_service_restarts_total{service="compression-api"}')
            if float(r["value"][1]) >= 1], timeout=60)
        assert restarts[0]["metric"]["target"] == f"127.0.0.1:{ports['compression']}"

        sink = f"http://127.0.0.1:{ports['sink']}/alerts"

        def down_alert():
            alerts = client.get(sink).json()["alerts"]
            return [a for a in alerts if a["labels"].get("job") == "compression-api"
                    and a["labels"]["alertname"] == "ServiceDown" and a["status"] == "firing"]

        alerts = wait_for("ServiceDown for compression-api at the webhook sink", down_alert, timeout=90)
        assert alerts[0]["labels"]["severity"] == "critical"
        assert alerts[0]["labels"]["instance"] == f"127.0.0.1:{ports['compression']}"
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
    log = (run_dir / "logs" / "supervisor.log").read_text()
    assert "process_crashed" in log and "compression-0" in log
    # Every process `up` started is gone.
    assert subprocess.run(["pgrep", "-f", str(inv_path)], capture_output=True).stdout == b""
