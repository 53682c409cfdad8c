"""Alerts as data: one module per service family, each a function from the monitored scope to Alerts.

An Alert is the etcd mixin's flat record (name, expr, for, severity, summary, templated description)
plus a runbook anchor. `rule_groups` turns the families into the `groups:` of alert_rules.yml; the
promtool unit tests for each family sit beside its module as `<family>_test.yml`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from dwcp.monitoring.config import Scope
from dwcp.monitoring.settings import MonitoringSettings

Severity = Literal["critical", "warning"]
COUNT = '{{ $value | printf "%.0f" }}'  # increase() extrapolates; show a whole number of events


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)
    # Keep at least this `for:` under alert_for_override (absence alerts must outlive the first scrape).
    min_for: str | None = None

    def rule(self, settings: MonitoringSettings) -> dict[str, Any]:
        for_ = settings.alert_for_override or self.for_
        if settings.alert_for_override and self.min_for and _seconds(self.min_for) > _seconds(for_):
            for_ = self.min_for
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": for_,
            "labels": {"severity": self.severity, **self.labels},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{settings.runbook_base_url}#{self.name.lower()}",
            },
        }


Family = Callable[[Scope], list[Alert]]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _seconds(duration: str) -> float:
    return sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))


def families() -> dict[str, Family]:
    """Family name -> alert function, in render order; the name is also the test file's stem."""
    from dwcp.monitoring.alerts import consensus, ml, services

    return {"services": services.alerts, "consensus": consensus.alerts, "ml": ml.alerts}


def rule_groups(scope: Scope, settings: MonitoringSettings) -> list[dict[str, Any]]:
    groups = []
    for name, family in families().items():
        rules = [a.rule(settings) for a in family(scope)]
        if rules:
            groups.append({"name": f"dwcp_{name}_alerts", "rules": rules})
    return groups


def test_file_text(family: str) -> str:
    """The promtool unit-test file kept beside the family's module."""
    return resources.files(__package__).joinpath(f"{family}_test.yml").read_text()
