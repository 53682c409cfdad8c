"""prometheus.yml: one scrape job per monitored service from the inventory, rules, and Alertmanager."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dwcp.monitoring.settings import MonitoringSettings

ALERT_RULES = "alert_rules.yml"
RECORDING_RULES = "recording_rules.yml"


def prometheus_config(settings: MonitoringSettings, targets: dict[str, list[str]],
                      tls_ca: dict[str, Path] | None = None) -> dict[str, Any]:
    """`targets` is job -> host:port list, in render order; the label `instance` stays host:port. Jobs in
    `tls_ca` (job -> CA file, runtime.tls) are scraped over HTTPS, verified against that CA."""
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
            _scrape_job(job, addrs, (tls_ca or {}).get(job)) for job, addrs in {**self_jobs, **targets}.items()
        ],
    }


def _scrape_job(job: str, addrs: list[str], ca: Path | None) -> dict[str, Any]:
    config: dict[str, Any] = {"job_name": job}
    if ca is not None:  # Prometheus checks the certificate names each target's host, as our clients do
        config |= {"scheme": "https", "tls_config": {"ca_file": str(ca)}}
    return config | {"static_configs": [{"targets": list(addrs)}]}
