"""`dwcp up` with three DWCP Manager sites, a compression-api, a 4-node T-PBFT cluster and the monitoring:
the load stores and transfers mixed objects between the sites and routes transactions through them, and
every Overview query (and every other answerable dashboard query and recording rule) returns data.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from dwcp.monitoring.live import check_live

from .conftest import UpRun, free_ports, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.network, pytest.mark.slow]


def test_up_runs_three_manager_sites_with_transfers_and_routing(tmp_path: Path) -> None:
    names = ["prometheus", "alertmanager", "cluster", "sink", "supervisor", "compression"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    m_http, m_peer, t_http, t_cons = free_ports(3), free_ports(3), free_ports(4), free_ports(4)
    inv = {
        "name": "e2e-manager",
        "supervisor": {"port": ports["supervisor"]},
        "monitoring": {
            "prometheus_port": ports["prometheus"], "alertmanager_port": ports["alertmanager"],
            "alertmanager_cluster_port": ports["cluster"], "sink_port": ports["sink"],
            "scrape_interval": "1s", "evaluation_interval": "1s",
        },
        "services": {
            "manager": {"instances": [{"host": "127.0.0.1", "port": h, "ports": {"peer": p}}
                                      for h, p in zip(m_http, m_peer, strict=True)],
                        "settings": {"probe_interval_s": 5}},
            "compression": {"instances": [{"host": "127.0.0.1", "port": ports["compression"]}]},
            "tpbft": {"instances": [{"host": "127.0.0.1", "port": h, "ports": {"consensus": c}}
                                    for h, c in zip(t_http, t_cons, strict=True)]},
        },
    }
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(yaml.safe_dump(inv))
    run_dir = tmp_path / "run"
    up = UpRun(inv_path, run_dir, tmp_path / "up.out", "--load-rate", "20", "--ready-timeout", "240")
    prom = f"http://127.0.0.1:{ports['prometheus']}"
    client = httpx.Client(timeout=5.0)

    def value(expr: str) -> float:
        body = client.get(f"{prom}/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", body
        return sum(float(r["value"][1]) for r in body["data"]["result"])

    with up, client:
        def managers_up():
            targets = client.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"]
            mine = [t for t in targets if t["labels"]["job"] == "dwcp-manager"]
            return mine if len(mine) == 3 and all(t["health"] == "up" for t in mine) else None

        wait_for("the 3 dwcp-manager targets up", managers_up, timeout=300)
        wait_for("transfers done between sites", lambda: value(
            'sum(dwcp_transfers_total{job="dwcp-manager", state="done"})') >= 3, timeout=180)
        wait_for("bytes on the wire", lambda: value('sum(dwcp_transfer_bytes_total{kind="wire"})') > 0, timeout=60)
        wait_for("transactions routed to tpbft", lambda: value(
            'sum(dwcp_routed_requests_total{target="tpbft", outcome="accepted"})') > 0, timeout=120)
        wait_for("links probed", lambda: value("count(dwcp_link_rtt_seconds)") == 6, timeout=60)
        empty: list[str] = []

        def live_queries_answer():
            results = check_live(prom, run_dir / "monitoring")
            empty[:] = [f"{x.where}: {x.expr}" for x in results if not x.ok]
            return results if not empty else None

        try:
            live = wait_for("every answerable query to return data", live_queries_answer, timeout=180)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still empty: {empty}") from None
        overview = [x for x in live if "overview" in x.where and not x.skipped]
        answered = " ".join(x.expr for x in overview)
        for metric in ("up{", "dwcp_requests_total", "dwcp_request_duration_seconds_bucket", "dwcp_errors_total",
                       "dwcp_circuit_breaker_state_seconds_total"):
            assert metric in answered, (metric, [x.expr for x in overview])
        closed = value('sum(dwcp_circuit_breaker_state_seconds_total{job="dwcp-manager", state="closed"})')
        assert closed > 0
    assert up.code == 0
