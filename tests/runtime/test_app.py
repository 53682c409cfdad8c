import asyncio
import logging
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field

from dwcp.runtime.app import HealthResult, create_app
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.errors import ApiError
from dwcp.runtime.inventory import load_inventory


class Body(BaseModel):
    size: int = Field(ge=0)


@pytest.fixture
def ctx(tmp_path):
    return ServiceContext(service="compression", job="compression-api", instance=0, host="127.0.0.1", port=5000,
                          settings=None, inventory=load_inventory(), data_dir=tmp_path,
                          logger=logging.getLogger("test"))


def make_client(ctx, checks=None):
    ctx.registry = CollectorRegistry()
    app = create_app(ctx, title="t", health_checks=checks or {})

    @app.post("/v1/things/{thing_id}")
    async def thing(thing_id: int, body: Body):
        if body.size == 13:
            raise ApiError(409, "duplicate", "thing already exists", field="size")
        if body.size == 99:
            raise RuntimeError("bug")
        return {"id": thing_id}

    return TestClient(app, raise_server_exceptions=False)


def test_health_reports_each_check_and_worst_status(ctx):
    async def model():
        return HealthResult("degraded", "stale model")

    client = make_client(ctx, {"db": lambda: HealthResult("ok"), "model": model})
    body = client.get("/health").json()
    assert body["status"] == "degraded" and body["service"] == "compression-api"
    assert body["checks"]["model"] == {"status": "degraded", "detail": "stale model"}

    def broken():
        raise OSError("disk gone")

    client = make_client(ctx, {"disk": broken})
    resp = client.get("/health")
    assert resp.status_code == 503 and resp.json()["checks"]["disk"]["detail"] == "OSError: disk gone"


def test_errors_have_one_json_shape_naming_the_field(ctx):
    client = make_client(ctx)
    resp = client.post("/v1/things/1", json={"size": -1})
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "size" and resp.json()["error"]["code"] == "invalid_input"
    resp = client.post("/v1/things/1", json={"size": 13})
    assert resp.status_code == 409 and resp.json() == {
        "error": {"code": "duplicate", "message": "thing already exists", "field": "size"}}
    resp = client.get("/nowhere")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    resp = client.post("/v1/things/1", json={"size": 99})
    assert resp.status_code == 500 and resp.json()["error"]["code"] == "internal_error"
    assert client.post("/v1/things/1", json={"size": 1}).json() == {"id": 1}  # still serving


def test_a_body_that_is_not_json_is_blamed_on_the_body(ctx):
    client = make_client(ctx)
    for body in (b'{"size": 1', b'{"size": "\xff"}', b'{"size": ' * 3000, b"[" * 5000 + b"]" * 5000):
        resp = client.post("/v1/things/1", content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert error["field"] == "body" and error["code"] == "bad_request" and error["message"].startswith("body:")


def test_request_metrics_use_route_templates(ctx):
    client = make_client(ctx)
    client.post("/v1/things/1", json={"size": 1})
    client.post("/v1/things/2", json={"size": -1})
    text = client.get("/metrics").text
    labels = 'code="200",handler="/v1/things/{thing_id}",method="POST",service="compression-api"'
    assert f"dwcp_requests_total{{{labels}}} 1.0" in text
    assert 'dwcp_errors_total{handler="/v1/things/{thing_id}",kind="client",service="compression-api"} 1.0' in text
    assert "dwcp_request_duration_seconds_bucket" in text and "process_resident_memory_bytes" in text
    assert "/v1/things/1" not in text


def test_capped_body_is_refused_by_declared_length_or_while_streaming(ctx):
    from fastapi import Request

    from dwcp.runtime.errors import read_body_capped

    ctx.registry = CollectorRegistry()
    app = create_app(ctx, title="t", health_checks={})

    @app.post("/echo")
    async def echo(request: Request):
        return {"size": len(await read_body_capped(request, 10, "blob"))}

    client = TestClient(app)
    assert client.post("/echo", content=b"x" * 10).json() == {"size": 10}
    declared = client.post("/echo", content=b"x" * 11)
    assert declared.status_code == 413 and declared.json()["error"] == {
        "code": "payload_too_large", "message": "request body of 11 bytes exceeds 10 bytes", "field": "blob"}

    def chunks():  # no Content-Length: only the streaming check can stop it
        yield b"x" * 6
        yield b"x" * 6

    streamed = client.post("/echo", content=chunks())
    assert streamed.status_code == 413 and streamed.json()["error"]["message"] == "request body exceeds 10 bytes"


def test_fast_post_answers_from_asgi_like_its_declared_route(ctx):
    import json

    from dwcp.runtime.app import RawRequest

    ctx.registry = CollectorRegistry()
    app = create_app(ctx, title="t", health_checks={})

    async def echo(request: RawRequest) -> bytes:
        fail = request.query().get("fail")
        if fail == "api":
            raise ApiError(409, "duplicate", "thing already exists", field="id")
        if fail == "bug":
            raise RuntimeError("bug")
        body = await request.body(10, "blob")
        return json.dumps({"routed": "route" in request.scope, "size": len(body),
                           "type": request.header(b"content-type")}).encode()

    app.fast_post("/echo", echo, summary="Echo a body's size")
    client = TestClient(app, raise_server_exceptions=False)

    def chunks():
        yield b"x" * 6
        yield b"x" * 6

    def exchange() -> list:
        ok = client.post("/echo", content=b"abc", headers={"content-type": "text/plain"})
        assert ok.headers["content-type"] == "application/json"
        return [(r.status_code, r.json()) for r in (
            ok, client.post("/echo?fail=api"), client.post("/echo", content=b"x" * 11),
            client.post("/echo", content=chunks()), client.post("/echo?fail=bug"))]

    fast = exchange()
    assert fast[0] == (200, {"routed": False, "size": 3, "type": "text/plain"})  # FastAPI's router never saw it
    assert fast[1] == (409, {"error": {"code": "duplicate", "message": "thing already exists", "field": "id"}})
    assert fast[2] == (413, {"error": {"code": "payload_too_large", "field": "blob",
                                       "message": "request body of 11 bytes exceeds 10 bytes"}})
    assert fast[3] == (413, {"error": {"code": "payload_too_large", "message": "request body exceeds 10 bytes",
                                       "field": "blob"}})
    assert fast[4] == (500, {"error": {"code": "internal_error", "message": "internal error: RuntimeError",
                                       "field": None}})
    assert client.get("/echo").status_code == 405  # only POST takes the fast path; the rest is routed
    operation = client.get("/openapi.json").json()["paths"]["/echo"]["post"]
    assert operation["summary"] == "Echo a body's size" and operation["operationId"] == "echo_echo_post"

    text = client.get("/metrics").text
    for code in ("200", "409", "413", "500"):
        count = 2 if code == "413" else 1
        assert f'dwcp_requests_total{{code="{code}",handler="/echo",method="POST",service="compression-api"}} ' \
               f'{count}.0' in text
    assert 'dwcp_errors_total{handler="/echo",kind="server",service="compression-api"} 1.0' in text

    app.fast_routes.clear()  # the declared route runs the same handler and answers the same
    routed = exchange()
    assert routed[0] == (200, {"routed": True, "size": 3, "type": "text/plain"}) and routed[1:] == fast[1:]


def test_fast_post_handler_may_answer_another_success_status(ctx):
    from dwcp.runtime.app import RawRequest

    ctx.registry = CollectorRegistry()
    app = create_app(ctx, title="t", health_checks={})

    async def accept(request: RawRequest) -> tuple[int, bytes]:
        return (202 if request.query().get("later") else 200), b'{"ok": true}'

    app.fast_post("/accept", accept)
    client = TestClient(app)
    for routed in (False, True):
        if routed:
            app.fast_routes.clear()  # the declared FastAPI route answers the same
        assert client.post("/accept?later=1").status_code == 202
        ok = client.post("/accept")
        assert (ok.status_code, ok.json()) == (200, {"ok": True})
    text = client.get("/metrics").text
    assert 'dwcp_requests_total{code="202",handler="/accept",method="POST",service="compression-api"} 2.0' in text


def test_health_is_answered_ahead_of_a_slow_middleware_and_still_counted(ctx):
    """/health never waits on what other requests pass through: a middleware that stalls is bypassed."""
    ctx.registry = CollectorRegistry()
    app = create_app(ctx, title="t", health_checks={"db": lambda: HealthResult("ok", "cached")})
    stalled: list[str] = []

    @app.middleware("http")
    async def stall(request, call_next):
        stalled.append(request.url.path)
        await asyncio.sleep(0.2)
        return await call_next(request)

    with TestClient(app) as client:
        started = time.perf_counter()
        resp = client.get("/health")
        elapsed = time.perf_counter() - started
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        assert resp.json()["checks"] == {"db": {"status": "ok", "detail": "cached"}}
        assert stalled == [] and elapsed < 0.2
        client.get("/metrics")
        assert stalled == ["/metrics"]
    assert ctx.registry.get_sample_value(
        "dwcp_requests_total", {"service": "compression-api", "handler": "/health", "method": "GET",
                                "code": "200"}) == 1.0


def test_a_handler_that_blocks_the_loop_shows_as_event_loop_lag(ctx):
    ctx.registry = CollectorRegistry()
    app = create_app(ctx, title="t", loop_lag_interval=0.05)  # samples often enough to time a short test

    @app.get("/v1/block")
    async def block():
        time.sleep(0.12)  # a blocking call in an async handler: every other request waits behind it
        return {}

    with TestClient(app) as client:
        time.sleep(0.15)
        assert ctx.registry.get_sample_value("dwcp_event_loop_lag_seconds_count", {"service": "compression-api"})
        client.get("/v1/block")
        time.sleep(0.1)
        assert app.state.loop_lag.max_seconds >= 0.05
    late = ctx.registry.get_sample_value("dwcp_event_loop_lag_seconds_count", {"service": "compression-api"}) - \
        ctx.registry.get_sample_value("dwcp_event_loop_lag_seconds_bucket", {"service": "compression-api",
                                                                             "le": "0.05"})
    assert late >= 1
