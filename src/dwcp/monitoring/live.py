"""Check rendered dashboards and alert rules against a running Prometheus.

A query is *answerable* when every vector selector in it (`name{matchers}`) matches a live series; an
answerable query must return data. A query over a service that is not running (ProBFT before it is built) is
reported as skipped, not failed: that panel is empty for a reason the operator can see in the target list.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from dwcp.monitoring.check import dashboard_exprs, substitute_variables

# Grouping clauses hold label names and durations hold units, not metrics: drop both before scanning.
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_DURATION = re.compile(r"\[[^\]]*\]")
# A metric name with its optional matchers; matching the braces too keeps label names out of the scan.
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^{}]*\})?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def selectors(expr: str) -> list[str]:
    """The vector selectors a PromQL expression reads (`name{matchers}`), in order, without duplicates."""
    text = _DURATION.sub("", _GROUPING.sub("", expr))
    found: list[str] = []
    for m in _SELECTOR.finditer(text):
        name, matchers = m.group(1), m.group(2) or ""
        if name.lower() in _KEYWORDS or (not matchers and text[m.end():].lstrip().startswith("(")):
            continue  # an operator keyword, or a function call
        if name + matchers not in found:
            found.append(name + matchers)
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    return {sel.split("{", 1)[0] for sel in selectors(expr)}


@dataclass(frozen=True, slots=True)
class LiveResult:
    where: str
    expr: str
    series: int
    skipped: str = ""  # why the query was not expected to answer

    @property
    def ok(self) -> bool:
        return bool(self.skipped) or self.series > 0


def _queries(out_dir: Path) -> list[tuple[str, str]]:
    found = []
    for path in sorted((out_dir / "grafana" / "dashboards").glob("*.json")):
        dash = json.loads(path.read_text())
        found += [(f"{dash['uid']}: {where}", substitute_variables(expr)) for where, expr in dashboard_exprs(dash)]
    rules = yaml.safe_load((out_dir / "recording_rules.yml").read_text()) if (
        out_dir / "recording_rules.yml").exists() else {"groups": []}
    found += [(f"record {r['record']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]
    return found


def check_live(prometheus_url: str, out_dir: Path, timeout: float = 10.0) -> list[LiveResult]:
    """Run every dashboard query and recording rule of `out_dir` against the Prometheus at `prometheus_url`."""
    with httpx.Client(base_url=prometheus_url, timeout=timeout) as client:
        has_series: dict[str, bool] = {}
        results = []
        for where, expr in _queries(Path(out_dir)):
            for sel in selectors(expr):
                if sel not in has_series:
                    body = client.get("/api/v1/query", params={"query": f"count({sel})"}).json()
                    has_series[sel] = bool(body.get("data", {}).get("result"))
            missing = [sel for sel in selectors(expr) if not has_series[sel]]
            if missing:
                results.append(LiveResult(where, expr, 0, skipped=f"no live series for {', '.join(missing)}"))
                continue
            body = client.get("/api/v1/query", params={"query": expr}).json()
            if body.get("status") != "success":
                results.append(LiveResult(where, expr, 0))
                continue
            results.append(LiveResult(where, expr, len(body["data"]["result"])))
    return results
