"""The node's HTTP API in-process (ASGI, no sockets): answers and JSON errors before anything commits.

The driver is built but not started, so submissions stay pending; what happens once they commit
is the e2e test's (test_cluster_e2e.py).
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from dwcp.consensus.node.service import build_app, parse_submission
from dwcp.runtime.auth import bearer_header, client_token
from dwcp.runtime.errors import ApiError
from dwcp.runtime.server import build_context
from tests.consensus.conftest import keyed_inventory


@pytest.fixture
async def client(tmp_path: Path):
    inv = keyed_inventory({"services": {"tpbft": {"replicas": 4, "base_port": 18300, "base_ports": {"consensus": 19300},
                                                  "settings": {"max_tx_bytes": 64}}}}, "tpbft", tmp_path / "keys")
    ctx = build_context(inv, "tpbft", 1, tmp_path)
    app = build_app(ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node",
                                 headers=bearer_header(client_token(ctx.token_file))) as c:
        yield c
    app.state.driver.store.close()


def _b64(data: bytes) -> dict:
    return {"payload": base64.b64encode(data).decode()}


async def test_submit_then_query_pending(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/transactions", json=_b64(b"hello"))
    assert r.status_code == 202 and r.json()["status"] == "pending"
    tx = r.json()["id"]
    assert len(tx) == 32
    assert (await client.get(f"/v1/transactions/{tx}")).json() == {"id": tx, "status": "pending", "height": None}
    raw = await client.post("/v1/transactions", content=b"raw", headers={"content-type": "application/octet-stream"})
    assert raw.status_code == 202
    status = (await client.get("/v1/status")).json()
    assert status["node"] == 1 and status["pending"] == 2 and status["height"] == 0
    assert status["protocol"] == "tpbft" and status["committee_size"] == 4


async def test_wait_times_out_as_pending(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/transactions?wait=true&timeout=0.05", json=_b64(b"never committed here"))
    assert r.status_code == 202 and r.json()["status"] == "pending"


@pytest.mark.parametrize(
    ("request_args", "status", "code"),
    [
        ({"content": b"x" * 1000, "headers": {"content-type": "application/octet-stream"}}, 413, "payload_too_large"),
        ({"json": _b64(b"x" * 65)}, 413, "payload_too_large"),
        ({"content": b"{oops", "headers": {"content-type": "application/json"}}, 400, "bad_request"),
        ({"content": b'{"payload": "\xff"}', "headers": {"content-type": "application/json"}}, 400, "bad_request"),
        ({"content": b'{"payload": "aGk="}', "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"json": {"payload": "not base64!"}}, 422, "invalid_input"),
        ({"json": {"data": "aGk="}}, 422, "invalid_input"),
    ],
)
async def test_bad_submissions_get_json_errors(client: httpx.AsyncClient, request_args: dict, status: int,
                                               code: str) -> None:
    r = await client.post("/v1/transactions", **request_args)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and r.json()["error"]["field"] is not None


def test_json_nested_past_the_parser_is_bad_request_naming_the_body() -> None:
    with pytest.raises(ApiError) as refused:
        parse_submission(b"[" * 5000 + b"]" * 5000, "application/json", 64)
    assert refused.value.status == 400 and refused.value.field == "body"


async def test_submissions_without_the_token_are_refused_but_reads_stay_open(client: httpx.AsyncClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer not-the-token-of-this-node"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}):
        r = await client.post("/v1/transactions", json=_b64(b"intruder"), headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert (await client.get("/v1/status", headers={"Authorization": ""})).json()["pending"] == 0
    assert (await client.get("/health", headers={"Authorization": ""})).status_code in (200, 503)
    metrics = (await client.get("/metrics", headers={"Authorization": ""})).text
    assert 'code="401",handler="/v1/transactions",method="POST"' in metrics


async def test_a_block_height_past_sqlite_integers_is_not_found_not_a_crash(client: httpx.AsyncClient) -> None:
    for height in ("9223372036854775808", "1" + "0" * 40, "-1"):
        r = await client.get(f"/v1/blocks/{height}")
        assert r.status_code in (404, 422) and r.json()["error"]["field"] == "height"


async def test_duplicate_unknown_and_malformed_lookups(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/transactions", json=_b64(b"once"))).status_code == 202
    dup = await client.post("/v1/transactions", json=_b64(b"once"))
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "duplicate"
    assert (await client.get(f"/v1/transactions/{'00' * 16}")).status_code == 404
    bad = await client.get("/v1/transactions/xyz")
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "tx_id"
    assert (await client.get("/v1/blocks/1")).status_code == 404
    assert (await client.get("/v1/blocks/first")).status_code == 422


async def test_health_is_degraded_without_a_quorum_of_peers(client: httpx.AsyncClient) -> None:
    body = (await client.get("/health")).json()
    assert body["status"] == "degraded"
    assert "0 peers connected, tpbft needs 2 to make progress" in body["checks"]["consensus"]["detail"]


@pytest.mark.parametrize(("query", "field"), [("wait=maybe", "wait"), ("wait=true&timeout=0", "timeout"),
                                              ("wait=true&timeout=61", "timeout"), ("timeout=soon", "timeout"),
                                              ("timeout=nan", "timeout")])
async def test_bad_wait_and_timeout_are_refused_naming_the_field(client: httpx.AsyncClient, query: str,
                                                                 field: str) -> None:
    r = await client.post(f"/v1/transactions?{query}", json=_b64(b"q"))
    assert r.status_code == 422 and r.json()["error"]["field"] == field
    assert (await client.get("/v1/status")).json()["pending"] == 0  # refused before submitting anything


async def test_submissions_take_the_fast_route_and_are_counted(client: httpx.AsyncClient) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    assert "/v1/transactions" in app.fast_routes
    for flag in ("1", "off", "TRUE"):
        r = await client.post(f"/v1/transactions?wait={flag}&timeout=0.01", json=_b64(flag.encode()))
        assert r.status_code == 202 and r.headers["content-type"] == "application/json"
    text = (await client.get("/metrics")).text
    assert 'dwcp_requests_total{code="202",handler="/v1/transactions",method="POST",service="tpbft-consensus"} 3.0' \
        in text
    doc = (await client.get("/openapi.json")).json()["paths"]["/v1/transactions"]["post"]
    assert {p["name"] for p in doc["parameters"]} == {"wait", "timeout"}



def _batch(*payloads: bytes) -> dict:
    return {"payloads": [base64.b64encode(p).decode() for p in payloads]}


async def test_a_batched_request_takes_each_transaction_and_reports_it(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/transactions", json=_b64(b"earlier"))).status_code == 202
    r = await client.post("/v1/batches?wait=true&timeout=0.05", json=_batch(b"a", b"b", b"earlier", b"a"))
    assert r.status_code == 202  # a and b are pending: this node has no peers, nothing commits
    body = r.json()
    assert body["accepted"] == 2
    assert [t["status"] for t in body["transactions"]] == ["pending", "pending", "duplicate", "duplicate"]
    a = body["transactions"][0]["id"]
    assert body["transactions"][3]["id"] == a
    assert (await client.get(f"/v1/transactions/{a}")).json()["status"] == "pending"
    assert (await client.get("/v1/status")).json()["pending"] == 3
    doc = (await client.get("/openapi.json")).json()["paths"]["/v1/batches"]["post"]
    assert doc["requestBody"]["content"]["application/json"]["schema"]["properties"]["payloads"]["maxItems"] == 1000


@pytest.mark.parametrize(
    ("request_args", "status", "code", "field"),
    [
        ({"json": _batch(b"ok", b"")}, 422, "invalid_input", "payloads[1]"),
        ({"json": {"payloads": ["aGk=", "not base64!"]}}, 422, "invalid_input", "payloads[1]"),
        ({"json": {"payloads": ["aGk=", 7]}}, 422, "invalid_input", "payloads[1]"),
        ({"json": {"payloads": []}}, 422, "invalid_input", "payloads"),
        ({"json": {"payloads": "aGk="}}, 422, "invalid_input", "payloads"),
        ({"json": {"payload": "aGk="}}, 422, "invalid_input", "payloads"),
        ({"json": _batch(b"ok", b"x" * 65)}, 413, "payload_too_large", "payloads[1]"),  # max_tx_bytes is 64
        ({"json": _batch(*[b"%d" % i for i in range(1001)])}, 413, "payload_too_large", "payloads"),
        ({"content": b'{"payloads": [', "headers": {"content-type": "application/json"}}, 400, "bad_request", "body"),
        ({"content": b"\x00\x00\x00\x02ok", "headers": {"content-type": "application/octet-stream"}}, 415,
         "unsupported_media_type", "content-type"),
    ],
)
async def test_a_bad_batch_is_refused_whole_and_submits_nothing(client: httpx.AsyncClient, request_args: dict,
                                                                status: int, code: str, field: str) -> None:
    r = await client.post("/v1/batches", **request_args)
    assert r.status_code == status
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == (code, field)
    assert (await client.get("/v1/status")).json()["pending"] == 0
