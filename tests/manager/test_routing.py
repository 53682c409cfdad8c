"""Routing transactions and allocations: unavailable clusters named, breakers, policy, and (with a real
T-PBFT cluster) failover past a killed node with at most one commit per idempotency key."""

from __future__ import annotations

import base64
import os
import time

import httpx
import pytest

from dwcp.consensus.core.messages import tx_id
from dwcp.consensus.node.cluster import LocalCluster
from dwcp.manager.links import LinkTable
from dwcp.manager.routing import Router
from dwcp.runtime.ports import free_port
from dwcp.runtime.services import SERVICE_KINDS


def tx(payload: bytes, cluster: str = "tpbft", key: str = "k1", **extra) -> dict:
    return {"payload": base64.b64encode(payload).decode(), "cluster": cluster, "idempotency_key": key, **extra}


def dead_cluster(n: int = 2) -> dict:
    """A T-PBFT entry whose nodes do not listen: every call fails to connect."""
    return {"tpbft": {"instances": [{"host": "127.0.0.1", "port": free_port(), "ports": {"consensus": free_port()}}
                                    for _ in range(n)]}}


def test_clusters_absent_from_the_deployment_get_503_naming_the_cluster(make_sites):
    site = make_sites(1)[0]
    for cluster in ("tpbft", "probft", "bullshark"):
        resp = site.client.post("/v1/transactions", json=tx(b"x", cluster))
        assert resp.status_code == 503, resp.text
        err = resp.json()["error"]
        assert err["field"] == "cluster" and cluster in err["message"]
        expected = "not in this deployment" if SERVICE_KINDS[cluster].built else "not built"
        assert expected in err["message"]


def test_a_dead_cluster_opens_its_breaker_and_then_fails_fast(make_sites):
    site = make_sites(1, extra=dead_cluster())[0]
    for i in range(2):  # failure_threshold is 2 in the test inventory
        resp = site.client.post("/v1/transactions", json=tx(b"p%d" % i, key=f"k{i}"))
        assert resp.status_code == 503 and resp.json()["error"]["field"] == "cluster"
    started = time.perf_counter()
    resp = site.client.post("/v1/transactions", json=tx(b"p9", key="k9"))
    assert resp.status_code == 503 and "breaker open" in resp.json()["error"]["message"]
    assert time.perf_counter() - started < 0.5
    assert site.metric("dwcp_circuit_breaker_state",
                       {"service": "dwcp-manager", "breaker": "tpbft", "state": "open"}) == 1
    health = site.client.get("/health").json()
    assert health["status"] == "degraded" and health["checks"]["tpbft"]["status"] == "degraded"


@pytest.mark.parametrize(("body", "field", "status"), [
    (tx(b"x") | {"payload": "not base64!"}, "payload", 422),
    (tx(b"x") | {"payload": ""}, "payload", 422),
    (tx(b"x", cluster="raft"), "cluster", 422),
    (tx(b"x", key="has space"), "idempotency_key", 422),
    ({"payload": "eA==", "cluster": "tpbft"}, "idempotency_key", 422),
    (tx(b"x") | {"extra": 1}, "extra", 422),
    (tx(b"x") | {"trust_sensitive": 0}, "trust_sensitive", 422),  # a strict boolean, as the schema says
    (tx(b"x") | {"payload": "eA"}, "payload", 422),  # base64 without its padding
    (tx(b"x" * 70000), "payload", 413),
])
def test_bad_transaction_requests_name_the_field(make_sites, body, field, status):
    site = make_sites(1)[0]
    resp = site.client.post("/v1/transactions", json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["field"] == field


@pytest.mark.parametrize(("body", "field"), [
    ({"demand": {"cpu": 2}}, "duration_s"),
    ({"demand": {"cpu": -1}, "duration_s": 60}, "demand.cpu"),
    ({"demand": {"cpu": 2}, "duration_s": 60, "extra": 1}, "extra"),
])
def test_bad_allocation_requests_are_refused_here_naming_the_field(make_sites, body, field):
    site = make_sites(1)[0]  # no allocator in this deployment: a bad body never gets as far as needing one
    resp = site.client.post("/v1/allocations", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field


def test_unknown_transaction_and_allocation_ids_are_404_naming_the_id(make_sites):
    site = make_sites(1)[0]
    resp = site.client.get("/v1/transactions/" + "a" * 32)
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "transaction_id"
    assert site.client.get("/v1/transactions/xyz").json()["error"]["field"] == "transaction_id"
    resp = site.client.delete("/v1/allocations/nope")
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "alloc_id"


def test_allocations_without_an_allocator_get_503_naming_it(make_sites):
    site = make_sites(1)[0]
    resp = site.client.post("/v1/allocations", json={"demand": {"cpu": 1}, "duration_s": 10})
    assert resp.status_code == 503 and resp.json()["error"]["field"] == "allocator"


class _Link:
    def __init__(self, tier):
        self.tier = tier


class _Links(LinkTable):
    def __init__(self, tiers):
        super().__init__([])
        self._tiers = tiers

    def all(self):
        return [_Link(t) for t in self._tiers]


class _Breaker:
    def refusing(self) -> bool:
        return False


class _Dep:
    breaker = _Breaker()


def router(tiers, built=("tpbft", "probft", "bullshark"), rate=0.0) -> Router:
    r = Router({c: _Dep() for c in built}, {c: "absent" for c in ("tpbft", "probft", "bullshark") if c not in built},
               None, None, _Links(tiers), None, 1.0, high_volume=100.0)
    r._recent.extend([time.monotonic()] * int(rate * 10))
    return r


@pytest.mark.parametrize(("tiers", "trust", "rate", "built", "want"), [
    (["datacenter"], False, 500, ("tpbft", "probft", "bullshark"), "bullshark"),
    (["datacenter"], False, 5, ("tpbft", "probft", "bullshark"), "tpbft"),
    (["datacenter", "wan"], False, 500, ("tpbft", "probft", "bullshark"), "probft"),
    (["wan"], True, 0, ("tpbft", "probft", "bullshark"), "tpbft"),
    (["metro"], False, 0, ("tpbft", "probft", "bullshark"), "tpbft"),
    (["wan"], False, 0, ("tpbft",), "tpbft"),  # probft unavailable: first available in the fallback order
    (["datacenter"], False, 500, ("probft",), "probft"),
])
def test_auto_policy_picks_by_trust_tier_and_volume(tiers, trust, rate, built, want):
    assert router(tiers, built, rate).choose("auto", trust) == want


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.network
def test_failover_past_a_killed_node_commits_each_idempotency_key_once(make_sites, tmp_path):
    with LocalCluster(tmp_path / "tpbft", 4) as cluster:
        cluster.start_all()
        cluster.wait_ready()
        entry = {"tpbft": {"instances": [{"host": "127.0.0.1", "port": p, "ports": {"consensus": c}}
                                         for p, c in zip(cluster.http_ports, cluster.consensus_ports, strict=True)],
                           "token_file": str(cluster.token_file)}}  # the manager writes with the nodes' token
        site = make_sites(1, extra=entry)[0]
        first = site.client.post("/v1/transactions", json=tx(b"first", key="once"))
        assert first.status_code == 202, first.text
        cluster.kill(1)
        payloads = [b"after-kill-%d-" % i + os.urandom(4) for i in range(8)]
        for i, p in enumerate(payloads):  # round-robin reaches the dead node: failover takes over
            resp = site.client.post("/v1/transactions", json=tx(p, key=f"k{i}"))
            assert resp.status_code == 202, resp.text
        assert cluster.url(1) in site.site.router.clusters["tpbft"]._failed_at  # it was tried and failed over
        assert site.metric("dwcp_circuit_breaker_state",
                           {"service": "dwcp-manager", "breaker": "tpbft", "state": "closed"}) == 1
        again = site.client.post("/v1/transactions", json=tx(b"first", key="once"))
        assert again.status_code == 202 and again.json()["replayed"] is True
        assert again.json()["id"] == first.json()["id"] == tx_id(b"first").hex()
        conflict = site.client.post("/v1/transactions", json=tx(b"other", key="once"))
        assert conflict.status_code == 409 and conflict.json()["error"]["field"] == "idempotency_key"
        ids = [first.json()["id"]] + [tx_id(p).hex() for p in payloads]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [site.client.get(f"/v1/transactions/{i}").json() for i in ids]
            if all(s["status"] == "committed" for s in states):
                break
            time.sleep(0.2)
        assert all(s["status"] == "committed" for s in states), states
        # Every transaction sits in exactly one block of a live node's log.
        live = cluster.url(0)
        height = httpx.get(f"{live}/v1/status").json()["height"]
        seen = [t for h in range(1, height + 1) for t in httpx.get(f"{live}/v1/blocks/{h}").json()["transactions"]]
        assert all(seen.count(i) == 1 for i in ids)


@pytest.mark.network
def test_health_stays_fast_while_a_cluster_stalls_every_call(make_sites):
    import socket
    import threading

    # A node that accepts connections and never answers: the routed call waits until the black hole closes.
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(64)
    port = black_hole.getsockname()[1]
    entry = {"tpbft": {"instances": [{"host": "127.0.0.1", "port": port, "ports": {"consensus": free_port()}}]}}
    site = make_sites(1, extra=entry, settings={"request_timeout_s": 60.0})[0]
    results = []
    stalled = threading.Thread(target=lambda: results.append(
        site.client.post("/v1/transactions", json=tx(b"stuck", key="stuck"))))
    stalled.start()
    time.sleep(0.3)
    # Every /health answers while the routed call is still stuck (its timeout is 60 s): behaviour, not wall
    # clock, so CPU starvation on a loaded CI machine cannot fail it; the timings are kept for the message.
    durations = []
    for _ in range(50):
        t0 = time.perf_counter()
        assert site.client.get("/health").status_code == 200
        durations.append(time.perf_counter() - t0)
        assert stalled.is_alive() and not results, f"the stalled call ended before /health #{len(durations)}"
    black_hole.close()  # resets the queued connection: the routed call fails now instead of after 60 s
    stalled.join(30)
    assert not stalled.is_alive()
    assert results[0].status_code == 503 and results[0].json()["error"]["field"] == "cluster"
    assert max(durations) < 30.0, sorted(durations)[-5:]  # vs a 60 s stall: no /health waited on it


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.network
def test_allocations_fail_over_to_a_live_allocator_and_release_where_placed(make_sites, tmp_path):
    import subprocess
    import sys

    import yaml

    from dwcp.runtime.auth import ensure_token_file

    token_file = ensure_token_file(tmp_path / "secrets" / "http-token")
    dead, live = free_port(), free_port()
    instances = [{"host": "127.0.0.1", "port": dead}, {"host": "127.0.0.1", "port": live}]
    inv = tmp_path / "allocator.yaml"
    inv.write_text(yaml.safe_dump({"name": "alloc", "security": {"token_file": str(token_file)},
                                   "services": {"allocator": {"instances": instances}}}))
    log = open(tmp_path / "allocator.log", "wb")  # noqa: SIM115 - closed below
    argv = [sys.executable, "-m", "dwcp", "serve", "allocator", "--instance", "1", "--inventory", str(inv),
            "--data-dir", str(tmp_path / "alloc-data")]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{live}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        entry = {"allocator": {"instances": instances, "token_file": str(token_file)}}
        site = make_sites(1, extra=entry)[0]
        request = {"demand": {"cpu": 2, "mem": 4}, "duration_s": 600}
        placed = [site.client.post("/v1/allocations", json=request) for _ in range(3)]
        assert all(r.status_code == 201 for r in placed), [r.text for r in placed]
        assert all(r.json()["allocator"] == f"http://127.0.0.1:{live}" for r in placed)
        assert f"http://127.0.0.1:{dead}" in site.site.router.allocator._failed_at  # tried first, failed over
        bad = site.client.post("/v1/allocations", json={"demand": {"cpu": -1}, "duration_s": 1})
        assert bad.status_code == 422 and bad.json()["error"]["field"]  # the allocator's answer, passed through
        alloc_id = placed[0].json()["id"]
        assert site.client.delete(f"/v1/allocations/{alloc_id}").status_code == 204
        assert site.client.delete(f"/v1/allocations/{alloc_id}").status_code == 404
        assert site.metric("dwcp_circuit_breaker_state",
                           {"service": "dwcp-manager", "breaker": "allocator", "state": "closed"}) == 1
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
