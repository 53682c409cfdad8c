"""The local alert sink: Alertmanager's webhook payload in, queryable alerts out, nothing lost on restart."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from dwcp.monitoring.sink import JOURNAL, build_sink_app


def _payload(status: str, alertname: str, severity: str, fingerprint: str, job: str = "compression-api") -> dict:
    return {
        "version": "4", "status": status, "receiver": "local-sink", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "alerts": [{
            "status": status, "labels": {"alertname": alertname, "severity": severity, "job": job},
            "annotations": {"summary": f"{alertname} on {job}"}, "startsAt": "2026-11-25T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph", "fingerprint": fingerprint,
        }],
    }


def test_alerts_are_kept_filtered_and_resolved(tmp_path: Path):
    client = TestClient(build_sink_app(tmp_path))
    assert client.post("/alerts", json=_payload("firing", "ServiceDown", "critical", "a1")).json() == {"received": 1}
    client.post("/alerts", json=_payload("firing", "HighLatency", "warning", "b2", job="dwcp-manager"))
    assert client.get("/alerts", params={"severity": "critical"}).json()["count"] == 1
    assert client.get("/alerts", params={"job": "dwcp-manager"}).json()["alerts"][0]["labels"]["alertname"] == (
        "HighLatency")
    assert {a["fingerprint"] for a in client.get("/alerts/active").json()["alerts"]} == {"a1", "b2"}
    client.post("/alerts", json=_payload("resolved", "ServiceDown", "critical", "a1"))
    assert [a["fingerprint"] for a in client.get("/alerts/active").json()["alerts"]] == ["b2"]
    assert client.get("/alerts", params={"status": "resolved"}).json()["count"] == 1


def test_bad_payload_is_refused_and_the_sink_keeps_serving(tmp_path: Path):
    client = TestClient(build_sink_app(tmp_path))
    assert client.post("/alerts", json={"status": "firing"}).status_code == 422
    assert client.post("/alerts", json={"status": "exploded", "alerts": []}).status_code == 422
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/alerts").json()["count"] == 0


def test_restart_reads_the_journal_back_and_skips_a_torn_line(tmp_path: Path):
    client = TestClient(build_sink_app(tmp_path))
    client.post("/alerts", json=_payload("firing", "ServiceDown", "critical", "a1"))
    with (tmp_path / JOURNAL).open("a") as journal:
        journal.write('{"status": "fir')  # a write torn by a crash
    again = TestClient(build_sink_app(tmp_path))
    alerts = again.get("/alerts").json()["alerts"]
    assert [a["labels"]["alertname"] for a in alerts] == ["ServiceDown"]


def test_memory_is_bounded_but_the_journal_keeps_everything(tmp_path: Path):
    client = TestClient(build_sink_app(tmp_path, max_alerts=3))
    for i in range(5):
        client.post("/alerts", json=_payload("firing", f"A{i}", "warning", f"f{i}"))
    assert [a["labels"]["alertname"] for a in client.get("/alerts").json()["alerts"]] == ["A2", "A3", "A4"]
    assert len((tmp_path / JOURNAL).read_text().splitlines()) == 5
