"""Grafana provisioning: the Prometheus datasource (fixed uid, so dashboards can default to it) and a
file provider that loads the rendered dashboards."""

from __future__ import annotations

from typing import Any

from dwcp.monitoring.settings import MonitoringSettings


def datasources(s: MonitoringSettings) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [{
            "name": "Prometheus",
            "type": "prometheus",
            "uid": s.grafana_datasource_uid,
            "access": "proxy",
            "url": s.prometheus_url,
            "isDefault": True,
            # Lets $__rate_interval know the scrape interval, so windows cover at least four scrapes.
            "jsonData": {"timeInterval": s.scrape_interval},
        }],
    }


def dashboard_provider(dashboards_path: str) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "dwcp",
            "folder": "DWCP",
            "type": "file",
            "disableDeletion": True,
            "allowUiUpdates": False,  # rendered files are the source of truth
            "options": {"path": dashboards_path, "foldersFromFilesStructure": False},
        }],
    }
