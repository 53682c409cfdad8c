"""Bearer tokens on write endpoints (runtime.auth applied by create_app), token files, and the client side."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from dwcp.runtime.app import RawRequest, create_app
from dwcp.runtime.auth import (
    RELOAD_S,
    TokenFile,
    TokenFileError,
    bearer_header,
    client_auth,
    client_token,
    ensure_token_file,
    read_tokens,
    token_path,
)
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.inventory import load_inventory, parse_inventory
from dwcp.runtime.server import build_context


class Thing(BaseModel):
    size: int


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return ensure_token_file(tmp_path / "secrets" / "http-token")


def guarded_app(tmp_path: Path, token_file: Path | None):
    ctx = ServiceContext(service="compression", job="compression-api", instance=0, host="127.0.0.1", port=5000,
                         settings=None, inventory=load_inventory(), data_dir=tmp_path, registry=CollectorRegistry(),
                         logger=logging.getLogger("test"), token_file=token_file)
    app = create_app(ctx, title="t", health_checks={})
    reads = []

    @app.post("/v1/things")
    async def make(thing: Thing) -> dict:
        reads.append(thing.size)
        return {"size": thing.size}

    @app.delete("/v1/things/{thing_id}", status_code=204)
    async def drop(thing_id: int) -> None:
        reads.append(-thing_id)

    @app.get("/v1/things")
    async def listing() -> dict:
        return {"things": reads}

    async def fast(request: RawRequest) -> bytes:
        reads.append(len(await request.body(100)))
        return b"{}"

    app.fast_post("/v1/fast", fast)
    return app, reads


def test_a_new_token_file_is_private_random_and_created_once(tmp_path: Path) -> None:
    path = ensure_token_file(tmp_path / "secrets" / "http-token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = client_token(path)
    assert len(token) >= 43
    assert client_token(ensure_token_file(path)) == token  # an existing file is kept
    assert client_token(ensure_token_file(tmp_path / "other")) != token
    assert [p.name for p in path.parent.iterdir()] == ["http-token"]  # no temporary file left behind


@pytest.mark.parametrize(("content", "mode", "complaint"), [
    ("a-long-enough-token-for-sure\n", 0o644, "chmod 600"),
    ("\n\n", 0o600, "empty"),
    ("short\n", 0o600, "not a token"),
])
def test_unusable_token_files_are_refused_naming_the_file(tmp_path: Path, content: str, mode: int,
                                                          complaint: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(TokenFileError, match=complaint) as refused:
        read_tokens(path)
    assert str(path) in str(refused.value)
    if content.strip():
        assert content.strip() not in str(refused.value)  # a token is never echoed, not even a bad one


def test_writes_without_the_right_token_are_refused_before_the_handler(tmp_path: Path, token_file: Path) -> None:
    app, reads = guarded_app(tmp_path, token_file)
    client = TestClient(app)
    good = bearer_header(client_token(token_file))
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-the-right-length-xxxxxxxxxxxxx"},
                    {"Authorization": "bearer"}, {"Authorization": f"Basic {client_token(token_file)}"}):
        for method, path, kwargs in (("POST", "/v1/things", {"json": {"size": 1}}), ("DELETE", "/v1/things/3", {}),
                                     ("POST", "/v1/fast", {"content": b"x"}), ("PUT", "/nowhere", {})):
            r = client.request(method, path, headers=headers, **kwargs)
            assert r.status_code == 401, (method, path, headers)
            assert r.json()["error"] == {"code": "unauthorized", "field": "authorization",
                                         "message": f"{method} needs an Authorization: Bearer token this service "
                                                    "accepts"}
            assert r.headers["www-authenticate"] == 'Bearer realm="dwcp"'
    assert reads == []
    assert client.post("/v1/things", json={"size": 1}, headers=good).json() == {"size": 1}
    assert client.delete("/v1/things/3", headers=good).status_code == 204
    assert client.post("/v1/fast", content=b"xy", headers=good).status_code == 200
    assert client.post("/v1/things", json={"size": 2}, headers={"authorization": "BEARER " + good["Authorization"][7:]})
    assert reads == [1, -3, 2, 2]
    # Reads stay open; refusals are counted under the route they were meant for.
    assert client.get("/v1/things").json() == {"things": [1, -3, 2, 2]}
    assert client.get("/health").status_code == 200
    metrics = client.get("/metrics").text
    assert 'dwcp_requests_total{code="401",handler="/v1/things",method="POST",service="compression-api"} 4.0' in metrics
    assert 'code="401",handler="/v1/things/{thing_id}",method="DELETE"' in metrics
    assert 'code="401",handler="/v1/fast",method="POST"' in metrics
    assert 'code="401",handler="unmatched",method="PUT"' in metrics


def test_an_unauthenticated_huge_body_is_refused_unread(tmp_path: Path, token_file: Path) -> None:
    app, _ = guarded_app(tmp_path, token_file)
    received = []

    async def call() -> None:
        scope = {"type": "http", "method": "POST", "path": "/v1/things", "headers": [(b"content-length", b"50000000")],
                 "query_string": b"", "root_path": ""}
        sent = []

        async def receive():
            received.append(1)
            return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 401

    import asyncio

    asyncio.run(call())
    assert received == []


def test_a_rotated_token_file_is_reloaded_without_a_restart(tmp_path: Path, token_file: Path) -> None:
    now = [0.0]
    tokens = TokenFile(token_file, clock=lambda: now[0])
    old = client_token(token_file)
    assert tokens.accepts(f"Bearer {old}".encode())
    new = "a-freshly-rotated-token-0123456789"
    token_file.write_text(f"{new}\n{old}\n")  # rotation, step 1: new first, old still accepted
    os.utime(token_file, ns=(1, 1))
    now[0] += RELOAD_S
    assert tokens.accepts(f"Bearer {new}".encode()) and tokens.accepts(f"Bearer {old}".encode())
    token_file.write_text(f"{new}\n")  # step 2: the old one is gone
    os.utime(token_file, ns=(2, 2))
    now[0] += RELOAD_S
    assert tokens.accepts(f"Bearer {new}".encode()) and not tokens.accepts(f"Bearer {old}".encode())
    token_file.write_text("")  # a broken edit keeps the last good tokens rather than locking everyone out
    os.utime(token_file, ns=(3, 3))
    now[0] += RELOAD_S
    assert tokens.accepts(f"Bearer {new}".encode())


def test_bodies_of_routed_endpoints_are_capped(tmp_path: Path, token_file: Path) -> None:
    app, reads = guarded_app(tmp_path, token_file)
    app.max_body_bytes = 64
    client = TestClient(app, headers=bearer_header(client_token(token_file)))
    declared = client.post("/v1/things", content=b'{"size": 1' + b" " * 100 + b"}",
                           headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"]["field"] == "body"

    def chunks():
        yield b'{"size": 1'
        yield b" " * 100 + b"}"

    streamed = client.post("/v1/things", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"]["message"] == "request body exceeds 64 bytes"
    assert reads == []


def test_validation_errors_do_not_echo_the_input(tmp_path: Path, token_file: Path) -> None:
    app, _ = guarded_app(tmp_path, token_file)
    client = TestClient(app, headers=bearer_header(client_token(token_file)))
    marker = "ECHO-ME-" * 1000
    r = client.post("/v1/things", json={"size": marker})
    assert r.status_code == 422 and "ECHO-ME" not in r.text


def test_build_context_makes_the_token_file_and_clients_send_it_only_to_its_service(tmp_path: Path) -> None:
    inv_path = tmp_path / "inv.yaml"
    inv_path.write_text("services:\n  tpbft: {replicas: 2, base_port: 18300, base_ports: {consensus: 19300}}\n"
                        "  allocator: {replicas: 1, base_port: 18400, token_file: alloc-token}\n"
                        "security: {token_file: secrets/shared-token}\n")
    inv = load_inventory(inv_path)
    assert token_path(inv, "tpbft") == tmp_path / "secrets" / "shared-token"
    assert token_path(inv, "allocator") == tmp_path / "alloc-token"
    ctx = build_context(inv, "allocator", 0, tmp_path / "data")
    assert ctx.token_file == tmp_path / "alloc-token" and stat.S_IMODE(ctx.token_file.stat().st_mode) == 0o600
    ensure_token_file(token_path(inv, "tpbft"))
    auth = client_auth(inv)
    sent = {}

    def record(request: httpx.Request) -> httpx.Response:
        sent[str(request.url)] = request.headers.get("authorization")
        return httpx.Response(200)

    with httpx.Client(auth=auth, transport=httpx.MockTransport(record)) as client:
        for url in ("http://127.0.0.1:18301/v1/transactions", "http://localhost:18400/v1/allocations",
                    "http://127.0.0.1:9190/api/v1/targets"):
            client.post(url)
    assert sent["http://127.0.0.1:18301/v1/transactions"] == f"Bearer {client_token(token_path(inv, 'tpbft'))}"
    assert sent["http://localhost:18400/v1/allocations"] == f"Bearer {client_token(ctx.token_file)}"
    assert sent["http://127.0.0.1:9190/api/v1/targets"] is None  # never to Prometheus or anyone else
    assert client_auth(inv, keys=["compression"]).tokens == {}  # a service this inventory lacks: no token


def test_without_an_inventory_path_the_token_lives_under_the_data_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DWCP_RUN_DIR", raising=False)
    inv = parse_inventory({"services": {"allocator": {"replicas": 1, "base_port": 18400}}})
    assert token_path(inv, "allocator", tmp_path) == tmp_path / "secrets" / "http-token"
    monkeypatch.setenv("DWCP_RUN_DIR", str(tmp_path / "run"))
    assert token_path(inv, "allocator", tmp_path) == tmp_path / "run" / "secrets" / "http-token"


def test_dwcp_up_makes_missing_token_files_and_refuses_a_multi_host_inventory_without_one(tmp_path: Path) -> None:
    from dwcp.runtime.supervise import UpOptions, prepare_tokens

    one_host = parse_inventory({"services": {"allocator": {"replicas": 2, "base_port": 18400}}})
    paths = prepare_tokens(one_host, UpOptions(), tmp_path / "run")
    assert paths == [tmp_path / "run" / "secrets" / "http-token"] and client_token(paths[0])
    two_hosts = parse_inventory({"services": {"allocator": {"instances": [{"host": "10.0.0.1", "port": 8400},
                                                                          {"host": "10.0.0.2", "port": 8400}]}}})
    with pytest.raises(ValueError, match="multi-host inventory must name the bearer-token file"):
        prepare_tokens(two_hosts, UpOptions(host="10.0.0.1"), tmp_path / "run2")
    assert not (tmp_path / "run2").exists()
    two_hosts.security.token_file = str(tmp_path / "shared-token")
    assert prepare_tokens(two_hosts, UpOptions(host="10.0.0.1"), tmp_path / "run2") == [tmp_path / "shared-token"]


def test_prometheus_is_started_without_its_lifecycle_api(tmp_path: Path, monkeypatch) -> None:
    from dwcp.runtime import supervise

    monkeypatch.setattr(supervise.shutil, "which", lambda name: f"/usr/bin/{name}")
    files = {"alertmanager.yml": tmp_path / "am.yml", "prometheus.yml": tmp_path / "prom.yml"}
    specs = {s.name: s for s in supervise.plan_monitoring(load_inventory(), tmp_path, files)}
    assert not any("lifecycle" in arg for arg in specs["prometheus"].argv)
