"""The real tools on the rendered files: promtool check/test rules, amtool check-config and routes, and the
dashboard PromQL parse. Each check also gets a broken input, so a check that always passes fails here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from dwcp.monitoring.check import check_dashboard, run_checks, substitute_variables

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None or shutil.which("amtool") is None,
    reason="promtool/amtool missing: scripts/setup.sh installs Debian's prometheus and prometheus-alertmanager",
)


@pytest.fixture(scope="module")
def results(rendered: Path) -> dict[str, object]:
    return {r.name: r for r in run_checks(rendered)}


def test_every_check_passes_on_the_default_inventory(results):
    failed = {name: r.detail for name, r in results.items() if not r.ok}
    assert not failed, failed


@pytest.mark.parametrize("suite", ["seed_test.yml", "services_test.yml", "consensus_test.yml", "ml_test.yml",
                                   "recording_test.yml"])
def test_each_promtool_unit_test_file_runs_and_passes(results, suite):
    result = results[f"promtool test rules {suite}"]
    assert result.ok and "SUCCESS" in result.detail, result.detail


def test_every_alert_has_a_firing_case_in_the_promtool_tests(rendered: Path):
    rules = yaml.safe_load((rendered / "tests" / "alert_rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    fired = set()
    for test_file in (rendered / "tests").glob("*_test.yml"):
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for art in case.get("alert_rule_test", []):
                if art.get("exp_alerts"):
                    fired.add(art["alertname"])
    assert alerts <= fired, f"alerts without a firing test: {sorted(alerts - fired)}"


def test_a_wrong_expectation_makes_promtool_fail(rendered: Path, tmp_path: Path):
    work = tmp_path / "monitoring"
    shutil.copytree(rendered, work)
    suite = work / "tests" / "services_test.yml"
    tests = yaml.safe_load(suite.read_text())
    for case in tests["tests"]:
        for art in case.get("alert_rule_test", []):
            art["exp_alerts"] = [] if art.get("exp_alerts") else [{"exp_labels": {"severity": "critical"}}]
    suite.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = {r.name: r for r in run_checks(work)}["promtool test rules services_test.yml"]
    assert not result.ok


def test_an_unparseable_rule_and_a_bad_route_are_reported(rendered: Path, tmp_path: Path):
    work = tmp_path / "monitoring"
    shutil.copytree(rendered, work)
    rules = yaml.safe_load((work / "alert_rules.yml").read_text())
    rules["groups"][0]["rules"][0]["expr"] = "sum by (job (up"
    (work / "alert_rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    am = yaml.safe_load((work / "alertmanager.yml").read_text())
    am["route"]["routes"] = [r for r in am["route"]["routes"] if r.get("receiver") != "pagerduty-critical"]
    (work / "alertmanager.yml").write_text(yaml.safe_dump(am, sort_keys=False))
    results = {r.name: r for r in run_checks(work)}
    assert not results["promtool check rules"].ok
    assert not results["route severity=critical -> local-sink, pagerduty-critical"].ok
    assert results["route severity=warning -> local-sink, ops-team"].ok


def test_dashboard_check_refuses_raw_bucket_quantiles_and_bad_promql(tmp_path: Path):
    def dashboard(expr: str) -> Path:
        path = tmp_path / "d.json"
        path.write_text(json.dumps({"uid": "d", "title": "D", "panels": [{"title": "p", "targets": [
            {"refId": "A", "expr": expr}]}]}))
        return path

    seed_form = "histogram_quantile(0.99, compression_selector_prediction_duration_bucket)"
    assert "raw buckets" in check_dashboard(dashboard(seed_form), tmp_path).detail
    assert not check_dashboard(dashboard("rate(x_total[5m]"), tmp_path).ok
    good = "histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket{job=~\"$job\"}[$__rate_interval])))"
    assert check_dashboard(dashboard(good), tmp_path).ok


def test_grafana_variables_become_plain_promql():
    assert substitute_variables('rate(x{job=~"$job"}[$__rate_interval])') == 'rate(x{job=~".*"}[5m])'
    assert substitute_variables("up{instance=~\"${instance}\"}[${__range}]") == 'up{instance=~".*"}[5m]'
