import logging
import math
import warnings

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
        assert client.delete(f"/v1/allocations/{body['id']}").status_code == 204  # releasing is idempotent
        unknown = client.delete(f"/v1/allocations/{'0' * 32}")
        assert unknown.status_code == 404 and unknown.json()["error"] == {
            "code": "unknown_allocation", "field": "alloc_id",
            "message": "no such allocation (never issued here, or ended before this instance's last restart)"}
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
    ({"demand": {"cpu": 1}, "duration_s": 10, "host": "nope"}, 409, "host"),
    ({"demand": {"cpu": 1000, "mem": 1}, "duration_s": 10}, 409, "demand"),
    ({"demand": {"cpu": 1}}, 422, "duration_s"),
    ({"demand": {}, "duration_s": 10}, 422, "demand"),
    ({"demand": {"cpu": 1e308}, "duration_s": 10}, 422, "demand.cpu"),
    ({"demand": {"cpu": 1, "gpu": 1}, "duration_s": 10}, 422, "demand.gpu"),
    ({"demand": {"cpu": 1}, "duration_s": 10, "max_wait_s": 1e308}, 422, "max_wait_s"),
    ({"demand": {"cpu": 1}, "duration_s": 1e308}, 422, "duration_s"),
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


@pytest.mark.parametrize("field", ["cpu", "mem", "net"])
def test_a_host_of_absurd_capacity_is_refused_and_the_cost_meters_stay_finite(tmp_path, clock, field):
    client, _ = make(tmp_path, clock)
    with client:
        host = {"name": "huge", "cpu": 8, "mem": 32, "net": 1000, field: 1e308}
        r = client.post("/v1/hosts", json=host)
        assert r.status_code == 422 and r.json()["error"]["field"] == field
        assert "1e+308" not in r.text  # errors never echo the input
        assert alloc(client).status_code == 201
        clock.t += 3600
        view = client.get("/v1/cluster").json()
        assert math.isfinite(view["cost_core_hours"]) and all(h["name"] != "huge" for h in view["hosts"])


@pytest.mark.parametrize("field", ["cpu", "mem", "net"])
def test_a_host_of_denormal_capacity_is_refused_so_no_feature_overflows(tmp_path, clock, field):
    client, _ = make(tmp_path, clock)
    with client:
        r = client.post("/v1/hosts", json={"name": "tiny", "cpu": 8, "mem": 32, "net": 1000, field: 5e-324})
        assert r.status_code == 422 and r.json()["error"]["field"] == field
        # With the smallest host accepted beside the default cluster, observing a demand raises no overflow.
        smallest = {"name": "smallest", "cpu": 0.001, "mem": 1 / 1024, "net": 0.001, "group": 0}
        assert client.post("/v1/hosts", json=smallest).status_code == 201
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            r = alloc(client, cpu=16, mem=64, net=1000)
        assert r.status_code == 201, r.text


def test_releasing_an_expired_allocation_is_a_no_op_not_a_404(tmp_path, clock):
    client, _ = make(tmp_path, clock)
    with client:
        aid = alloc(client, duration=10).json()["id"]
        clock.t += 11
        assert client.get(f"/v1/allocations/{aid}").status_code == 404  # not active any more
        assert client.delete(f"/v1/allocations/{aid}").status_code == 204
        assert client.delete(f"/v1/allocations/{aid}").status_code == 204
        assert client.get("/v1/cluster").json()["active_allocations"] == 0


def test_the_demand_schema_says_some_resource_must_be_positive(tmp_path, clock):
    client, _ = make(tmp_path, clock)
    with client:
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        assert {tuple(branch["required"]) for branch in schemas["Demand"]["anyOf"]} == {("cpu",), ("mem",), ("net",)}
        assert schemas["Demand"]["additionalProperties"] is False


async def test_the_load_profile_gets_no_errors_from_a_healthy_allocator(tmp_path, clock) -> None:
    import asyncio
    from collections import Counter

    import httpx

    from dwcp.allocator import load

    ctx = ServiceContext(service="allocator", job="maddpg-allocator", instance=0, host="127.0.0.1", port=8400,
                         settings=AllocatorSettings(), inventory=load_inventory(), data_dir=tmp_path,
                         registry=CollectorRegistry(), logger=logging.getLogger("test"))
    app = build_app(ctx)  # the real clock: the profile sizes durations from it
    codes: Counter[int] = Counter()

    async def count(response: httpx.Response) -> None:
        codes[response.status_code] += 1

    stop = asyncio.Event()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://a",
                                 event_hooks={"response": [count]}) as client:
        # A high rate on a small cluster: allocations expire during the run, so releases of ended ones happen.
        task = asyncio.create_task(load.drive(["http://a"], client, stop, rate=400.0))
        await asyncio.sleep(3.0)
        stop.set()
        await asyncio.wait_for(task, 10)
    assert codes[201] > 50 and codes[204] > 5, codes
    assert codes[404] == 0 and codes[422] == 0 and codes[400] == 0, codes
