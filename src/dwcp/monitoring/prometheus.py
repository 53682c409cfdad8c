"""prometheus.yml: one scrape job per monitored service from the inventory, rules, and Alertmanager."""

from __future__ import annotations

from typing import Any

from dwcp.monitoring.settings import MonitoringSettings

ALERT_RULES = "alert_rules.yml"
RECORDING_RULES = "recording_rules.yml"


def prometheus_config(settings: MonitoringSettings, targets: dict[str, list[str]]) -> dict[str, Any]:
    """`targets` is job -> host:port list, in render order; the label `instance` stays host:port."""
    self_jobs = {
        "prometheus": [f"{settings.prometheus_host}:{settings.prometheus_port}"],
        "alertmanager": [settings.alertmanager_address],
    }
    return {
        "global": {
            "scrape_interval": settings.scrape_interval,
            "evaluation_interval": settings.evaluation_interval,
        },
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [settings.alertmanager_address]}]}]},
        "rule_files": [ALERT_RULES, RECORDING_RULES],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(addrs)}]}
            for job, addrs in {**self_jobs, **targets}.items()
        ],
    }
