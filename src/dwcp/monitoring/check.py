"""Validate a rendered monitoring directory with the real tools: promtool, amtool, and a PromQL parse of
every dashboard query. Nothing here raises on a failed check; each check becomes a CheckResult.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dwcp.monitoring.alertmanager import SINK_RECEIVER

TOOL_TIMEOUT_S = 120
# Grafana's built-in intervals become a concrete duration; template variables a harmless regex.
_BUILTIN = re.compile(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}")
_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_:]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z_][A-Za-z0-9_]*\]\]")


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""
    command: list[str] = field(default_factory=list)


def _run(name: str, argv: list[str], cwd: Path | None = None) -> CheckResult:
    tool = shutil.which(argv[0])
    if tool is None:
        return CheckResult(name, False, f"{argv[0]} is not installed (apt-get install prometheus / "
                                        "prometheus-alertmanager)", argv)
    try:
        proc = subprocess.run([tool, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return CheckResult(name, False, f"timed out after {TOOL_TIMEOUT_S}s", argv)
    # amtool warns on every call that --config.file overrides --alertmanager.url; that is the point.
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "overrides the --alertmanager.url" not in ln]
    output = "\n".join(lines).strip()
    return CheckResult(name, proc.returncode == 0, output, argv)


def substitute_variables(expr: str) -> str:
    """Make a Grafana query plain PromQL: intervals become 5m, template variables `.*`."""
    return _VARIABLE.sub(".*", _BUILTIN.sub("5m", expr))


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(where, expr) for every query target of every panel, rows included."""
    found = []
    panels = list(dashboard.get("panels", []))
    for row in dashboard.get("rows", []) or []:
        panels += row.get("panels", [])
    for panel in panels:
        panels += panel.get("panels", []) or []  # collapsed rows nest their panels
        for target in panel.get("targets", []) or []:
            found.append((f"{panel.get('title', '?')}/{target.get('refId', '?')}", target.get("expr", "")))
    return found


def _parse_exprs(name: str, exprs: list[tuple[str, str]], scratch: Path) -> CheckResult:
    rules = [{"record": f"dashboard:target_{i}:check", "expr": substitute_variables(e)} for i, (_, e) in
             enumerate(exprs)]
    path = scratch / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    return _run(name, ["promtool", "check", "rules", str(path)])


def check_dashboard(path: Path, scratch: Path) -> CheckResult:
    name = f"dashboard {path.name}"
    try:
        dash = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return CheckResult(name, False, f"not readable JSON: {exc}")
    problems = []
    if not dash.get("uid") or not dash.get("title"):
        problems.append("missing uid or title")
    exprs = dashboard_exprs(dash)
    if not exprs:
        problems.append("no query targets")
    for where, expr in exprs:
        if not expr.strip():
            problems.append(f"{where}: empty expr")
        elif "histogram_quantile" in expr and not re.search(r"rate\(\s*\w+_bucket", expr):
            problems.append(f"{where}: histogram_quantile over raw buckets; use rate(..._bucket[...])")
    if problems:
        return CheckResult(name, False, "; ".join(problems))
    result = _parse_exprs(name, exprs, scratch)
    if result.ok:
        return CheckResult(name, True, f"{len(exprs)} queries parse", result.command)
    # Name the failing panels: parse each query alone.
    bad = [f"{where}: {expr}" for where, expr in exprs
           if not _parse_exprs(f"{name} {where}", [(where, expr)], scratch).ok]
    return CheckResult(name, False, "does not parse: " + "; ".join(bad) + "\n" + result.detail, result.command)


def _route_checks(config: Path) -> list[CheckResult]:
    try:
        receivers = {r["name"] for r in yaml.safe_load(config.read_text())["receivers"]}
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        return [CheckResult("alertmanager routes", False, f"cannot read receivers: {exc}")]
    sink = [SINK_RECEIVER] if SINK_RECEIVER in receivers else []
    cases = [  # labels, receivers Alertmanager must pick (the seed's routes, plus the sink when present)
        (["severity=critical"], [*sink, "pagerduty-critical"]),
        (["severity=warning"], [*sink, "ops-team"]),
        ([], [*sink, "ops-team"]),
    ]
    results = []
    for labels, expected in cases:
        argv = ["amtool", "config", "routes", "test", f"--config.file={config}",
                f"--verify.receivers={','.join(expected)}", "alertname=DWCPCheck", *labels]
        r = _run(f"route {' '.join(labels) or '(no severity)'} -> {', '.join(expected)}", argv)
        results.append(r)
    return results


def run_checks(out_dir: Path) -> list[CheckResult]:
    """Every check on a directory written by render_all; an empty directory fails, it does not raise."""
    out_dir = Path(out_dir)
    prom, am = out_dir / "prometheus.yml", out_dir / "alertmanager.yml"
    rules = [p for p in (out_dir / "alert_rules.yml", out_dir / "recording_rules.yml") if p.exists()]
    results = [
        _run("promtool check config", ["promtool", "check", "config", str(prom)]),
        _run("promtool check rules", ["promtool", "check", "rules", *map(str, rules)]) if rules else
        CheckResult("promtool check rules", False, f"no rule files in {out_dir}"),
    ]
    tests = sorted((out_dir / "tests").glob("*_test.yml"))
    if not tests:
        results.append(CheckResult("promtool test rules", False, f"no *_test.yml under {out_dir / 'tests'}"))
    for test in tests:
        results.append(_run(f"promtool test rules {test.name}", ["promtool", "test", "rules", test.name],
                            cwd=test.parent))
    results.append(_run("amtool check-config", ["amtool", "check-config", str(am)]))
    results += _route_checks(am) if am.exists() else []
    dashboards = sorted((out_dir / "grafana" / "dashboards").glob("*.json"))
    if not dashboards:
        results.append(CheckResult("dashboards", False, "no dashboards rendered"))
    with tempfile.TemporaryDirectory(prefix="dwcp-dash-") as scratch:
        results += [check_dashboard(d, Path(scratch)) for d in dashboards]
    return results
