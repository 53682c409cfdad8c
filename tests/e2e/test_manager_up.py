"""`dwcp up` with three DWCP Manager sites, a compression-api, a 4-node T-PBFT cluster, a one-node Bullshark
cluster (primary and worker process) and the monitoring: the load stores and transfers mixed objects between
the sites and routes transactions through them to both clusters, a transaction routed to Bullshark is followed
to its commit, and every Overview query (and every other answerable dashboard query and recording rule)
returns data.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from dwcp.runtime.auth import bearer_header, client_token

from .conftest import UpRun, free_ports, job_targets_up, prom_query, wait_for, wait_live_queries

pytestmark = [pytest.mark.e2e, pytest.mark.network, pytest.mark.slow]


def test_up_runs_three_manager_sites_with_transfers_and_routing(tmp_path: Path) -> None:
    names = ["prometheus", "alertmanager", "cluster", "sink", "supervisor", "compression"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    m_http, m_peer, t_http, t_cons = free_ports(3), free_ports(3), free_ports(4), free_ports(4)
    b_http, b_cons, b_worker = free_ports(3)
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
            "bullshark": {"instances": [{"host": "127.0.0.1", "port": b_http,
                                         "ports": {"consensus": b_cons, "worker": b_worker}}]},
        },
    }
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(yaml.safe_dump(inv))
    run_dir = tmp_path / "run"
    up = UpRun(inv_path, run_dir, tmp_path / "up.out", "--load-rate", "20", "--ready-timeout", "240")
    prom = f"http://127.0.0.1:{ports['prometheus']}"
    client = httpx.Client(timeout=5.0)

    def value(expr: str) -> float:
        return sum(float(r["value"][1]) for r in prom_query(client, prom, expr))

    with up, client:
        wait_for("the 3 dwcp-manager targets up",
                 lambda: job_targets_up(client, prom, "dwcp-manager", 3), timeout=300)
        # The load makes no mistakes, so a client's bad request gives the Overview's Error Rate panel its data.
        token = bearer_header(client_token(run_dir / "secrets" / "http-token"))
        bad = client.post(f"http://127.0.0.1:{m_http[0]}/v1/transactions", json={"cluster": "tpbft"}, headers=token)
        assert bad.status_code == 422 and bad.json()["error"]["field"], bad.text
        wait_for("transfers done between sites", lambda: value(
            'sum(dwcp_transfers_total{job="dwcp-manager", state="done"})') >= 3, timeout=180)
        wait_for("bytes on the wire", lambda: value('sum(dwcp_transfer_bytes_total{kind="wire"})') > 0, timeout=60)
        for cluster in ("tpbft", "bullshark"):
            wait_for(f"transactions routed to {cluster}", lambda c=cluster: value(
                f'sum(dwcp_routed_requests_total{{target="{c}", outcome="accepted"}})') > 0, timeout=120)
        site = f"http://127.0.0.1:{m_http[1]}"
        routed = client.post(f"{site}/v1/transactions", headers=token, json={
            "payload": "ZTJlIGJ1bGxzaGFyaw==", "cluster": "bullshark", "idempotency_key": "e2e-bullshark"})
        assert routed.status_code == 202 and routed.json()["cluster"] == "bullshark", routed.text
        tx = routed.json()["id"]
        wait_for("the routed transaction committed by Bullshark", lambda: client.get(
            f"{site}/v1/transactions/{tx}").json()["status"] == "committed", timeout=60)
        wait_for("links probed", lambda: value("count(dwcp_link_rtt_seconds)") == 6, timeout=60)
        live = wait_live_queries(prom, run_dir / "monitoring", timeout=180)
        overview = [x for x in live if "overview" in x.where and not x.skipped]
        answered = " ".join(x.expr for x in overview)
        for metric in ("up{", "dwcp_requests_total", "dwcp_request_duration_seconds_bucket", "dwcp_errors_total",
                       "dwcp_circuit_breaker_state_seconds_total"):
            assert metric in answered, (metric, [x.expr for x in overview])
        closed = value('sum(dwcp_circuit_breaker_state_seconds_total{job="dwcp-manager", state="closed"})')
        assert closed > 0
    assert up.code == 0
