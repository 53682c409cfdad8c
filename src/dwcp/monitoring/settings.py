"""Monitoring settings: the inventory's top-level `monitoring:` section.

Every field has a default, so an inventory without the section still renders a working stack on one
machine. Secrets are never values here, only paths to files that hold them: the rendered
alertmanager.yml names the file (`service_key_file`, `api_url_file`, `auth_password_file`) and
Alertmanager reads it, so no secret ever lands in a rendered or committed file.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def _duration(value: str) -> str:
    if not _DURATION.match(value):
        raise ValueError(f"{value!r} is not a Prometheus duration like 15s, 5m or 1h30m")
    return value


class MonitoringSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = Field(9090, ge=1, le=65535)
    alertmanager_host: str = "127.0.0.1"
    alertmanager_port: int = Field(9093, ge=1, le=65535)
    # Gossip port; `dwcp up` runs one Alertmanager with --cluster.listen-address= so it stays unused there.
    alertmanager_cluster_port: int = Field(9094, ge=1, le=65535)
    sink_host: str = "127.0.0.1"
    sink_port: int = Field(9095, ge=1, le=65535)

    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    # When set (e.g. "5s"), replaces every alert's `for:` so an end-to-end test sees alerts fire quickly.
    alert_for_override: str | None = None

    # Alertmanager timing; the seed's values.
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "12h"
    resolve_timeout: str = "5m"

    # Route every alert to the built-in webhook sink as well as (continue: true) the seed's receivers.
    local_sink: bool = True
    # The bearer token Alertmanager sends to the sink (credentials file). None: `dwcp up` makes
    # <run dir>/secrets/alert-sink-token and renders that path.
    sink_token_file: str | None = None

    # Secret sources: files Alertmanager reads at notify time. A receiver integration is rendered only
    # when its secret (or SMTP relay) is configured; unconfigured receivers stay valid but silent.
    pagerduty_service_key_file: str | None = None
    slack_api_url_file: str | None = None
    slack_channel: str = "#dwcp-alerts"
    email_to: str = "ops-team@example.com"
    smtp_smarthost: str | None = None  # host:port of the relay; email is off while None
    smtp_from: str = "alertmanager@dwcp.local"
    smtp_auth_username: str | None = None
    smtp_auth_password_file: str | None = None
    smtp_require_tls: bool = True

    runbook_base_url: str = "https://dwcp.example.com/docs/runbooks.md"  # set to where docs/runbooks.md is served
    grafana_datasource_uid: str = "dwcp-prometheus"
    # Where Grafana finds the rendered dashboards; None means the render directory's grafana/dashboards.
    grafana_dashboards_path: str | None = None

    @field_validator(
        "scrape_interval", "evaluation_interval", "group_wait", "group_interval", "repeat_interval",
        "resolve_timeout",
    )
    @classmethod
    def _check_duration(cls, value: str) -> str:
        return _duration(value)

    @field_validator("alert_for_override")
    @classmethod
    def _check_override(cls, value: str | None) -> str | None:
        return None if value is None else _duration(value)

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.prometheus_host}:{self.prometheus_port}"

    @property
    def alertmanager_address(self) -> str:
        return f"{self.alertmanager_host}:{self.alertmanager_port}"

    @property
    def sink_url(self) -> str:
        return f"http://{self.sink_host}:{self.sink_port}/alerts"
