import logging

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from dwcp.allocator.service import build_app
from dwcp.allocator.settings import AllocatorSettings
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.inventory import load_inventory


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def make(tmp_path, clock, **settings):
    ctx = ServiceContext(service="allocator", job="maddpg-allocator", instance=0, host="127.0.0.1", port=8400,
                         settings=AllocatorSettings(**settings), inventory=load_inventory(), data_dir=tmp_path,
                         registry=CollectorRegistry(), logger=logging.getLogger("test"))
    return TestClient(build_app(ctx, clock=clock), raise_server_exceptions=False), ctx.registry


@pytest.fixture
def clock():
    return Clock()


def alloc(client, cpu=4, mem=8, net=100, duration=600, **extra):
    return client.post("/v1/allocations", json={"demand": {"cpu": cpu, "mem": mem, "net": net},
                                                "duration_s": duration, "max_wait_s": 60, **extra})


def test_allocate_release_and_cluster_view(tmp_path, clock):
    client, reg = make(tmp_path, clock)
    with client:
        assert len(client.get("/v1/cluster").json()["hosts"]) == 16  # default cluster registered
        r = alloc(client)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["policy"] == "maddpg" and body["end"] - body["start"] == 600
        view = client.get("/v1/cluster").json()
        host = next(h for h in view["hosts"] if h["name"] == body["host"])
        assert host["used"] == {"cpu": 4, "mem": 8, "net": 100} and view["active_allocations"] == 1
        assert client.get(f"/v1/allocations/{body['id']}").json()["host"] == body["host"]
        assert client.delete(f"/v1/allocations/{body['id']}").status_code == 204
        assert client.get("/v1/cluster").json()["active_allocations"] == 0
        assert client.delete(f"/v1/allocations/{body['id']}").json()["error"]["code"] == "unknown_allocation"
        assert reg.get_sample_value("maddpg_total_allocations_total") == 1
        assert reg.get_sample_value("maddpg_successful_allocations_total") == 1
        assert reg.get_sample_value("maddpg_allocation_duration_seconds_count") == 1
        assert reg.get_sample_value("maddpg_inference_duration_seconds_count") == 1
        assert reg.get_sample_value("maddpg_active_allocations") == 0
        assert "maddpg_resource_optimization_percentage" in client.get("/metrics").text
        assert "/v1/allocations" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("payload, status, field", [
    ({"demand": {"cpu": -1, "mem": 1}, "duration_s": 10}, 422, "demand.cpu"),
    ({"demand": {"cpu": 0}, "duration_s": 10}, 422, "demand"),
    ({"demand": {"cpu": 1}, "duration_s": 0}, 422, "duration_s"),
    ({"demand": {"cpu": 1}, "duration_s": 10, "host": "nope"}, 422, "host"),
    ({"demand": {"cpu": 1000, "mem": 1}, "duration_s": 10}, 422, "demand"),
    ({"demand": {"cpu": 1}}, 422, "duration_s"),
])
def test_bad_input_is_a_json_4xx_and_changes_nothing(tmp_path, clock, payload, status, field):
    client, reg = make(tmp_path, clock)
    with client:
        before = client.get("/v1/cluster").json()
        r = client.post("/v1/allocations", json=payload)
        assert r.status_code == status and r.json()["error"]["field"] == field, r.text
        after = client.get("/v1/cluster").json()
        assert after == before
        assert reg.get_sample_value("maddpg_total_allocations_total") == 0


def test_refusal_when_full_then_expiry_frees_capacity(tmp_path, clock):
    client, reg = make(tmp_path, clock, register_default_cluster=False)
    with client:
        assert alloc(client).json()["error"]["code"] == "no_hosts"
        assert client.post("/v1/hosts", json={"name": "h1", "cpu": 8, "mem": 32, "net": 1000}).status_code == 201
        assert client.post("/v1/hosts", json={"name": "h1", "cpu": 8, "mem": 32, "net": 1000}).status_code == 409
        assert client.post("/v1/hosts", json={"name": "h2", "cpu": -8, "mem": 32, "net": 1000}).status_code == 422
        assert alloc(client, cpu=6, duration=100).status_code == 201
        r = alloc(client, cpu=6)
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_capacity"
        assert reg.get_sample_value("maddpg_sla_compliance_ratio") == 0.5
        clock.t += 101  # the first allocation has run its course
        assert alloc(client, cpu=6).status_code == 201
        assert reg.get_sample_value("maddpg_total_allocations_total") == 3
        assert reg.get_sample_value("maddpg_successful_allocations_total") == 2


def test_state_survives_a_restart(tmp_path, clock):
    client, _ = make(tmp_path, clock)
    with client:
        ids = [alloc(client, cpu=c).json()["id"] for c in (2, 4, 8)]
        alloc(client, cpu=4096, mem=1)  # 422: not a decision
        client.delete(f"/v1/allocations/{ids[0]}")
        clock.t += 50
        before = client.get("/v1/cluster").json()
    client2, reg2 = make(tmp_path, clock)
    with client2:
        after = client2.get("/v1/cluster").json()
        assert after == before
        assert client2.get(f"/v1/allocations/{ids[1]}").status_code == 200
        assert client2.get(f"/v1/allocations/{ids[0]}").status_code == 404
        assert reg2.get_sample_value("maddpg_total_allocations_total") == 3
        assert client2.delete(f"/v1/allocations/{ids[2]}").status_code == 204


def test_optimization_is_measured_against_the_round_robin_shadow(tmp_path, clock):
    client, reg = make(tmp_path, clock, policy="first-fit")
    with client:
        for _ in range(4):
            assert alloc(client, cpu=1, duration=1000).status_code == 201
        clock.t += 500
        view = client.get("/v1/cluster").json()
        # first-fit keeps one 32-core host on; round-robin powers four hosts of 32+32+32+32 cores.
        assert view["powered_on_hosts"] == 1
        assert view["cost_core_hours"] == pytest.approx(32 * 500 / 3600)
        assert view["shadow_cost_core_hours"] == pytest.approx(4 * 32 * 500 / 3600)
        assert reg.get_sample_value("maddpg_resource_optimization_percentage") == pytest.approx(75.0)
