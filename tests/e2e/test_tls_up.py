"""`dwcp up` with HTTPS for one service: health waits, the load generator's writes and Prometheus's scrape all
go over TLS against the deployment's CA (runtime/tls.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.pki import make_ca, make_server_cert

from .conftest import UpRun, free_ports, job_targets_up, up_inventory, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.network, pytest.mark.slow]


def _allocator_writes_ok(client: httpx.Client, prom: str) -> float | None:
    query = 'sum(dwcp_requests_total{job="maddpg-allocator",method="POST",code=~"2.."})'
    result = client.get(f"{prom}/api/v1/query", params={"query": query}).json()["data"]["result"]
    return float(result[0]["value"][1]) if result and float(result[0]["value"][1]) > 0 else None


def test_up_serves_one_service_over_https_and_prometheus_and_the_load_generator_use_its_ca(tmp_path: Path) -> None:
    ca, ca_key, ca_cert = make_ca(tmp_path)
    make_server_cert(tmp_path, ca_key, ca_cert)
    (port,) = free_ports(1)
    tls = {"cert_file": "server.pem", "key_file": "server.key", "ca_file": ca.name}
    inv, prom = up_inventory(tmp_path, "tls", {"allocator": {"instances": [{"port": port}], "tls": tls}})
    with UpRun(inv, tmp_path / "run", tmp_path / "up.out", "--service", "allocator", "--load-rate", "5",
               "--ready-timeout", "150"), httpx.Client(timeout=5) as client:
        targets = wait_for("the allocator's target up in Prometheus", lambda: job_targets_up(
            client, prom, "maddpg-allocator", 1), timeout=180)
        assert targets[0]["scrapeUrl"] == f"https://127.0.0.1:{port}/metrics"
        wait_for("the load generator's POSTs answered 2xx over https", lambda: _allocator_writes_ok(client, prom),
                 timeout=90)
        with pytest.raises(httpx.HTTPError):  # the port speaks TLS only
            client.get(f"http://127.0.0.1:{port}/health")
