"""The local alert sink: an Alertmanager webhook receiver that logs, keeps and serves the alerts it gets.

`dwcp up` routes every alert here (see alertmanager.py) so alerts are visible on one machine without
PagerDuty or Slack. Each alert notification is appended to `<data_dir>/alerts.jsonl` before it is
acknowledged, so a restart loses nothing; the newest `max_alerts` are kept in memory for queries. The
journal is bounded: past `max_journal_bytes` it becomes `alerts.jsonl.1` (the one before is dropped).

Only Alertmanager may post: `POST /alerts` needs the sink's bearer token (`dwcp up` makes it and renders it
into Alertmanager's `http_config` as a credentials file), and a body is at most `max_body_bytes`; reads stay
open. Built on the runtime's `harden`, so errors, JSON decoding and the token check are the services' own.

    POST /alerts                       Alertmanager webhook (payload version 4), bearer token
    GET  /alerts?status=firing&alertname=HighLatency&severity=&job=&limit=
    GET  /alerts/active                the latest notification per alert fingerprint, if still firing
    GET  /health
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from dwcp.runtime.app import App, harden

log = logging.getLogger("dwcp.monitoring.sink")
JOURNAL = "alerts.jsonl"
MAX_JOURNAL_BYTES = 64 << 20
# Alertmanager's webhook sends at most `max_alerts` (rendered as 500) alerts per post, ~1-2 KiB each.
MAX_BODY_BYTES = 4 << 20


class WebhookAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: str = Field("", alias="startsAt")
    ends_at: str = Field("", alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = ""


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str = "4"
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_key: str = Field("", alias="groupKey")
    alerts: list[WebhookAlert]


class AlertStore:
    """Received alerts, newest last: bounded in memory, every one appended to a JSONL journal (itself bounded:
    the current file and the one before it, each at most about `max_journal_bytes`)."""

    def __init__(self, data_dir: Path, max_alerts: int = 10_000, max_journal_bytes: int = MAX_JOURNAL_BYTES) -> None:
        self.path = Path(data_dir) / JOURNAL
        self.previous = self.path.with_name(JOURNAL + ".1")
        self.max_journal_bytes = max_journal_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.records: deque[dict[str, Any]] = deque(maxlen=max_alerts)
        for path in (self.previous, self.path):
            if path.exists():
                for line in path.read_text().splitlines():
                    try:
                        self.records.append(json.loads(line))
                    except ValueError:
                        log.warning("skipping a corrupt line in %s", path)  # e.g. a torn write at a crash

    def add(self, payload: WebhookPayload, now: datetime | None = None) -> list[dict[str, Any]]:
        received = (now or datetime.now(UTC)).isoformat()
        new = [{"received_at": received, "receiver": payload.receiver, "group_key": payload.group_key,
                **alert.model_dump(by_alias=True)} for alert in payload.alerts]
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # alerts name hosts: not for all
        with open(fd, "a") as journal:
            journal.writelines(json.dumps(r, sort_keys=True) + "\n" for r in new)
            full = journal.tell() > self.max_journal_bytes
        if full:
            os.replace(self.path, self.previous)
        self.records.extend(new)
        return new

    def query(self, *, status: str | None = None, alertname: str | None = None, severity: str | None = None,
              job: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        wanted = {"alertname": alertname, "severity": severity, "job": job}
        found = [r for r in self.records
                 if (status is None or r["status"] == status)
                 and all(v is None or r["labels"].get(k) == v for k, v in wanted.items())]
        return found[-limit:] if limit else found

    def active(self) -> list[dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for r in self.records:
            latest[r["fingerprint"] or json.dumps(r["labels"], sort_keys=True)] = r
        return [r for r in latest.values() if r["status"] == "firing"]


def _log(records: Iterable[dict[str, Any]]) -> None:
    for r in records:
        labels = r["labels"]
        log.info("alert %s %s: %s", r["status"], labels.get("alertname", "?"),
                 r["annotations"].get("summary", ""),
                 extra={"alert_labels": labels, "severity": labels.get("severity"), "receiver": r["receiver"]})


def build_sink_app(data_dir: Path, *, token_file: Path | None = None, max_alerts: int = 10_000,
                   max_journal_bytes: int = MAX_JOURNAL_BYTES, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The sink's app; `token_file` None leaves POST open (tests only: `dwcp alert-sink` requires one)."""
    store = AlertStore(data_dir, max_alerts, max_journal_bytes)
    app = App(title="dwcp alert sink", version="1")
    harden(app, token_file, max_body_bytes)
    app.state.store = store

    @app.post("/alerts")
    async def receive(payload: WebhookPayload) -> dict[str, int]:
        new = store.add(payload)
        _log(new)
        return {"received": len(new)}

    @app.get("/alerts")
    async def list_alerts(
        status: Literal["firing", "resolved"] | None = None,
        alertname: str | None = None,
        severity: str | None = None,
        job: str | None = None,
        limit: int | None = Query(None, ge=1),
    ) -> dict[str, Any]:
        found = store.query(status=status, alertname=alertname, severity=severity, job=job, limit=limit)
        return {"count": len(found), "alerts": found}

    @app.get("/alerts/active")
    async def active() -> dict[str, Any]:
        found = store.active()
        return {"count": len(found), "alerts": found}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
