"""The local alert sink: Alertmanager's webhook payload in, queryable alerts out, nothing lost on restart."""

from __future__ import annotations

import json
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


def test_only_posts_with_the_sink_token_are_kept_and_reads_stay_open(tmp_path: Path):
    from dwcp.runtime.auth import bearer_header, client_token, ensure_token_file

    token_file = ensure_token_file(tmp_path / "secrets" / "alert-sink-token")
    client = TestClient(build_sink_app(tmp_path / "alerts", token_file=token_file))
    fake = _payload("firing", "ServiceDown", "critical", "evil")
    for headers in ({}, {"Authorization": "Bearer forged-token-of-some-length"}):
        r = client.post("/alerts", json=fake, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert client.get("/alerts").json()["count"] == 0
    r = client.post("/alerts", json=fake, headers=bearer_header(client_token(token_file)))
    assert r.json() == {"received": 1}


def test_a_huge_alert_is_refused_and_the_journal_is_bounded(tmp_path: Path):
    client = TestClient(build_sink_app(tmp_path, max_journal_bytes=4096, max_body_bytes=64 * 1024))
    huge = _payload("firing", "ServiceDown", "critical", "big")
    huge["alerts"][0]["annotations"]["summary"] = "x" * (20 << 20)  # the 20 MB alert of issue 15
    r = client.post("/alerts", content=json.dumps(huge), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "xxxx" not in r.text
    assert not (tmp_path / JOURNAL).exists()
    for i in range(40):  # ~350 bytes each: the journal rotates, never grows past two files of ~4 KiB
        assert client.post("/alerts", json=_payload("firing", f"A{i}", "warning", f"f{i}")).status_code == 200
    assert (tmp_path / JOURNAL).stat().st_size <= 4096 + 1024
    assert (tmp_path / (JOURNAL + ".1")).stat().st_size <= 4096 + 1024
    assert oct((tmp_path / JOURNAL).stat().st_mode & 0o777) == "0o600"
    again = TestClient(build_sink_app(tmp_path))  # what is on disk is read back, newest last
    names = [a["labels"]["alertname"] for a in again.get("/alerts").json()["alerts"]]
    assert names[-1] == "A39" and names == sorted(names, key=lambda n: int(n[1:]))
