"""Rendering from the inventory: scrape jobs, job filtering, overrides, determinism, alertmanager secrets."""

from __future__ import annotations

from pathlib import Path

from dwcp.monitoring.render import render_all, render_files

SEED_JOBS = ["dwcp-manager", "compression-api", "probft-consensus", "bullshark-consensus", "tpbft-consensus",
             "maddpg-allocator"]


def _jobs(prom: dict) -> dict[str, list[str]]:
    return {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}


def _alerts(rules: dict) -> list[dict]:
    return [r for g in rules["groups"] for r in g["rules"]]


def test_prometheus_scrapes_the_seed_jobs_at_inventory_addresses(rendered, load, inventory):
    prom = load(rendered / "prometheus.yml")
    jobs = _jobs(prom)
    assert [j for j in jobs if j in SEED_JOBS] == SEED_JOBS
    assert jobs["dwcp-manager"] == ["127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082"]
    assert len(jobs["bullshark-consensus"]) == 4 and jobs["bullshark-consensus"][-1] == "127.0.0.1:8503"
    assert len(jobs["probft-consensus"]) == 7 and len(jobs["tpbft-consensus"]) == 10
    assert prom["rule_files"] == ["alert_rules.yml", "recording_rules.yml"]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{inventory.monitoring.alertmanager_port}"]
    assert prom["global"] == {"scrape_interval": "15s", "evaluation_interval": "15s"}


def test_jobs_limit_scrape_jobs_and_job_specific_alerts(inventory, tmp_path, load):
    render_all(inventory, tmp_path, jobs={"dwcp-manager", "tpbft"})  # a job name and an inventory key
    jobs = _jobs(load(tmp_path / "prometheus.yml"))
    assert set(jobs) == {"prometheus", "alertmanager", "dwcp-manager", "tpbft-consensus"}
    alerts = {a["alert"]: a["expr"] for a in _alerts(load(tmp_path / "alert_rules.yml"))}
    assert "QuorumNotAchieved" not in alerts and "ModelAccuracyDrop" not in alerts
    assert "ServiceDown" not in alerts  # no compression/allocator jobs
    assert alerts["TargetMissing"] == 'absent(up{job="dwcp-manager"})\nor\nabsent(up{job="tpbft-consensus"})'
    assert alerts["ConsensusDown"] == 'up{job="tpbft-consensus"} == 0'
    assert "bullshark" not in alerts["ConsensusStalled"] and "probft" not in alerts["ConsensusStalled"]


def test_disabled_or_empty_services_get_no_job(small_inventory, tmp_path, load):
    inv = small_inventory()
    inv.services["tpbft"].enabled = False
    render_all(inv, tmp_path)
    assert "tpbft-consensus" not in _jobs(load(tmp_path / "prometheus.yml"))
    assert not any(a["alert"].startswith("Consensus") for a in _alerts(load(tmp_path / "alert_rules.yml")))


def test_extra_targets_become_scrape_jobs(small_inventory, tmp_path, load):
    render_all(small_inventory(), tmp_path, extra_targets={"dwcp-supervisor": ["127.0.0.1:9099"]})
    assert _jobs(load(tmp_path / "prometheus.yml"))["dwcp-supervisor"] == ["127.0.0.1:9099"]


def test_alert_for_override_replaces_every_for_but_absence_keeps_a_floor(small_inventory, tmp_path, load):
    render_all(small_inventory(alert_for_override="5s"), tmp_path)
    fors = {a["alert"]: a["for"] for a in _alerts(load(tmp_path / "alert_rules.yml"))}
    assert fors.pop("TargetMissing") == "1m"  # must outlive the first scrape after Prometheus starts
    assert set(fors.values()) == {"5s"}
    # the promtool tests keep the real timings: they are rendered with default settings
    test_fors = {a["alert"]: a["for"] for a in _alerts(load(tmp_path / "tests" / "alert_rules.yml"))}
    assert test_fors["HighLatency"] == "5m"


def test_monitoring_settings_reach_the_files(small_inventory, tmp_path, load):
    inv = small_inventory(prometheus_port=19090, alertmanager_port=19093, sink_port=19095, scrape_interval="5s",
                          runbook_base_url="https://runbooks.example/dwcp", group_wait="1s")
    render_all(inv, tmp_path)
    prom = load(tmp_path / "prometheus.yml")
    assert prom["global"]["scrape_interval"] == "5s"
    assert _jobs(prom)["prometheus"] == ["127.0.0.1:19090"]
    am = load(tmp_path / "alertmanager.yml")
    assert am["route"]["group_wait"] == "1s"
    sink = next(r for r in am["receivers"] if r["name"] == "local-sink")
    assert sink["webhook_configs"][0]["url"] == "http://127.0.0.1:19095/alerts"
    urls = {a["annotations"]["runbook_url"] for a in _alerts(load(tmp_path / "alert_rules.yml"))}
    assert "https://runbooks.example/dwcp#dwcpmanagerdown" in urls
    ds = load(tmp_path / "grafana/provisioning/datasources/dwcp.yaml")["datasources"][0]
    assert ds["url"] == "http://127.0.0.1:19090" and ds["jsonData"]["timeInterval"] == "5s"


def test_alertmanager_reads_secrets_from_files_and_never_inlines_them(small_inventory, tmp_path, load):
    inv = small_inventory(pagerduty_service_key_file="/etc/dwcp/pd.key", slack_api_url_file="/etc/dwcp/slack",
                          smtp_smarthost="smtp.example.com:587", smtp_auth_username="alerts",
                          smtp_auth_password_file="/etc/dwcp/smtp.pw", local_sink=False)
    render_all(inv, tmp_path)
    am = load(tmp_path / "alertmanager.yml")
    receivers = {r["name"]: r for r in am["receivers"]}
    assert set(receivers) == {"ops-team", "pagerduty-critical"}
    assert receivers["pagerduty-critical"]["pagerduty_configs"] == [{"service_key_file": "/etc/dwcp/pd.key"}]
    assert receivers["ops-team"]["slack_configs"][0]["api_url_file"] == "/etc/dwcp/slack"
    assert receivers["ops-team"]["email_configs"][0]["to"] == "ops-team@example.com"
    assert am["global"]["smtp_auth_password_file"] == "/etc/dwcp/smtp.pw"
    assert [r["receiver"] for r in am["route"]["routes"]] == ["pagerduty-critical", "ops-team"]
    text = (tmp_path / "alertmanager.yml").read_text()
    assert "service_key:" not in text and "api_url:" not in text and "auth_password:" not in text


def test_unconfigured_receivers_exist_but_notify_nobody(rendered, load):
    am = load(rendered / "alertmanager.yml")
    receivers = {r["name"]: r for r in am["receivers"]}
    assert receivers["pagerduty-critical"] == {"name": "pagerduty-critical"}
    assert receivers["ops-team"] == {"name": "ops-team"}
    assert am["route"]["routes"][0] == {"receiver": "local-sink", "matchers": ['alertname=~".+"'], "continue": True}


def test_rendering_is_deterministic(inventory, tmp_path):
    first = render_all(inventory, tmp_path / "a")
    before = {name: path.read_bytes() for name, path in first.items()}
    again = render_all(inventory, tmp_path / "a")
    assert {name: path.read_bytes() for name, path in again.items()} == before
    other = render_files(inventory, dashboards_path=str((tmp_path / "a" / "grafana" / "dashboards").resolve()))
    assert {name: text.encode() for name, text in other.items()} == before


def test_returned_names_cover_every_file_written(inventory, tmp_path):
    written = render_all(inventory, tmp_path)
    on_disk = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert set(written) == on_disk
    assert {"prometheus.yml", "alert_rules.yml", "recording_rules.yml", "alertmanager.yml",
            "grafana/provisioning/datasources/dwcp.yaml", "grafana/provisioning/dashboards/dwcp.yaml",
            "grafana/dashboards/dwcp-overview.json", "tests/services_test.yml"} <= set(written)
    assert all(isinstance(p, Path) and p.is_absolute() for p in written.values())


def test_alertmanager_authenticates_to_the_sink_with_a_credentials_file(small_inventory, tmp_path, load):
    import shutil
    import subprocess

    render_all(small_inventory(sink_token_file="/run/dwcp/secrets/alert-sink-token"), tmp_path)
    sink = next(r for r in load(tmp_path / "alertmanager.yml")["receivers"] if r["name"] == "local-sink")
    webhook = sink["webhook_configs"][0]
    assert webhook["http_config"] == {"authorization": {"type": "Bearer",
                                                        "credentials_file": "/run/dwcp/secrets/alert-sink-token"}}
    assert webhook["max_alerts"] == 500
    if shutil.which("amtool"):
        check = subprocess.run(["amtool", "check-config", str(tmp_path / "alertmanager.yml")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_the_overview_draws_each_manager_sites_object_store_from_metrics_the_manager_exposes():
    import json

    from prometheus_client import CollectorRegistry

    from dwcp.manager.metrics import ManagerMetrics
    from dwcp.monitoring.dashboards import render_dashboards
    from dwcp.monitoring.live import metric_names

    overview = json.loads(render_dashboards()["dwcp-overview.json"])
    panel = next(p for p in overview["panels"] if p["title"] == "Manager Object Store")
    read = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
    assert read == {"dwcp_store_bytes", "dwcp_store_pruned_bytes_total"}
    registry = CollectorRegistry()
    ManagerMetrics(registry)
    exposed = {s.name for m in registry.collect() for s in m.samples}
    assert read <= exposed
