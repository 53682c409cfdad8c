"""The ASGI app every DWCP service is built on: `/health`, `/metrics`, JSON errors, request metrics,
bearer tokens on write endpoints (runtime.auth) and a cap on every request body.

Services call `create_app(ctx, ...)` and add their own routes; none of them re-implements any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from dwcp import __version__
from dwcp.runtime.auth import WRITE_METHODS, TokenFile, authorization_of, deny_response_headers
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.errors import (
    ApiError,
    decode_json,
    error_body,
    install_error_handlers,
    raised_response,
    read_capped,
    unexpected_response,
)
from dwcp.runtime.looplag import INTERVAL as LOOP_LAG_INTERVAL
from dwcp.runtime.looplag import LoopLag

# `_created` samples double every counter's series and no DWCP query reads them.
disable_created_metrics()

HealthStatus = Literal["ok", "degraded", "down"]
_SEVERITY: dict[str, int] = {"ok": 0, "degraded": 1, "down": 2}


@dataclass(frozen=True, slots=True)
class HealthResult:
    """One dependency's health: `down` makes the instance unhealthy (503), `degraded` only reports."""

    status: HealthStatus
    detail: str = ""


HealthCheck = Callable[[], HealthResult | Awaitable[HealthResult]]
Hook = Callable[[], Awaitable[None]]

# Request latencies of DWCP services sit between ~100 µs (health, predict) and seconds (consensus waits).
REQUEST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    """The shared `dwcp_requests_total`, `dwcp_request_duration_seconds` and `dwcp_errors_total`."""

    def __init__(self, registry, service: str) -> None:
        self.service = service
        self.requests = Counter(
            "dwcp_requests_total", "HTTP requests served, by route template and status code.",
            ["service", "handler", "method", "code"], registry=registry,
        )
        self.duration = Histogram(
            "dwcp_request_duration_seconds", "Time from request received to response sent, by route.",
            ["service", "handler", "method"], buckets=REQUEST_BUCKETS, registry=registry,
        )
        self.errors = Counter(
            "dwcp_errors_total", "HTTP responses with an error status: kind=client (4xx) or server (5xx).",
            ["service", "handler", "kind"], registry=registry,
        )
        # Children by (handler, method, status), resolved once: labels() costs more than observe() does.
        self._children: dict[tuple[str, str, int], tuple] = {}

    def observe(self, handler: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request under its route template (never the raw path: ids would explode)."""
        children = self._children.get((handler, method, status))
        if children is None:
            kind = None if status < 400 else "client" if status < 500 else "server"
            children = self._children[handler, method, status] = (
                self.duration.labels(self.service, handler, method),
                self.requests.labels(self.service, handler, method, str(status)),
                self.errors.labels(self.service, handler, kind) if kind else None,
            )
        duration, requests, errors = children
        duration.observe(seconds)
        requests.inc()
        if errors is not None:
            errors.inc()


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body copy) so it costs microseconds."""

    def __init__(self, app, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            handler = getattr(scope.get("route"), "path", None) or "unmatched"
            if handler != "/metrics":
                self.metrics.observe(handler, scope.get("method", ""), status, time.perf_counter() - start)


# What a request body may be unless a route reads its own with a larger cap (RawRequest.body): the JSON of
# every FastAPI-routed DWCP endpoint is a few hundred bytes.
MAX_BODY_BYTES = 1 << 20


class JsonRequest(Request):
    """A Starlette request whose `body()` is capped at the app's `max_body_bytes` (413 by the declared length,
    unread, or cut off while streaming) and whose `json()` is the runtime's `decode_json` (400 naming the
    body, never 500). A handler that streams a large body on purpose reads `request.stream()` itself."""

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            cap = getattr(self.scope.get("app"), "max_body_bytes", MAX_BODY_BYTES)
            self._body = await read_capped(self.headers.get("content-length"), self.stream(), cap, "body")
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode_json(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """FastAPI's route, reading JSON bodies with `JsonRequest`; `create_app` makes it every route's class."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return route_handler


# A fast route's handler: the JSON body of a 200, or (status, JSON body) for another success status.
FastHandler = Callable[["RawRequest"], Awaitable[bytes | tuple[int, bytes]]]


class RawRequest:
    """What a fast route reads of a request, straight from ASGI: headers, query string, a capped body."""

    __slots__ = ("scope", "receive")

    def __init__(self, scope, receive) -> None:
        self.scope = scope
        self.receive = receive

    def header(self, name: bytes) -> str:
        """The first value of a header (`name` in lower case, as ASGI servers give them), or ""."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value.decode("latin-1")
        return ""

    def query(self) -> dict[str, str]:
        """Query parameters, the last value of a repeated one winning (as `dict(request.query_params)`)."""
        return dict(parse_qsl(self.scope["query_string"].decode("latin-1"), keep_blank_values=True))

    async def body(self, cap: int, field: str | None = None) -> bytes:
        """The body, refused with 413 past `cap` bytes exactly as `read_body_capped` refuses it."""
        declared = self.header(b"content-length") or None
        return await read_capped(declared, self._chunks(), cap, field)

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return


class App(FastAPI):
    """FastAPI, plus routes declared with `fast_post`: a POST to one of them is answered before any of
    FastAPI's layers (middleware stack, routing, dependencies, exception handlers), which together cost
    more per request than a compression prediction does.

    The answer is what the FastAPI route would give: the handler's JSON with 200, an ApiError or HTTP
    exception as the one error shape, anything else as the logged 500 (then re-raised, as Starlette's
    ServerErrorMiddleware does), and request metrics under the route's path. Other requests go through
    FastAPI as usual.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_routes: dict[str, FastHandler] = {}
        self.fast_gets: dict[str, FastHandler] = {}  # GETs answered the same way (`/health`)
        self.request_metrics: RequestMetrics | None = None  # set by create_app
        self.tokens: TokenFile | None = None  # None: writes are open (hand-built contexts in tests)
        self.max_body_bytes = MAX_BODY_BYTES  # what JsonRequest.body() reads at most

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        method = scope["method"]
        if method in WRITE_METHODS and self.tokens is not None \
                and not self.tokens.accepts(authorization_of(scope["headers"])):
            await self._refuse(scope, send, 401, "unauthorized",
                               f"{method} needs an Authorization: Bearer token this service accepts",
                               "authorization", deny_response_headers())
            return
        handler = self.fast_routes.get(scope["path"]) if method == "POST" else \
            self.fast_gets.get(scope["path"]) if method == "GET" else None
        if handler is None:
            await super().__call__(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        try:
            try:
                answer = await handler(RawRequest(scope, receive))
            except (ApiError, StarletteHTTPException) as exc:
                response = raised_response(exc)
            except Exception as exc:
                await unexpected_response(scope["method"], scope["path"], exc)(scope, receive, send)
                raise
            else:
                status, body = _status_and_body(answer)
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON)]})
                await send({"type": "http.response.body", "body": body})
                return
            status = response.status_code
            await response(scope, receive, send)
        finally:
            self.request_metrics.observe(scope["path"], method, status, time.perf_counter() - start)

    async def _refuse(self, scope, send, status: int, code: str, message: str, field: str,
                      headers: list[tuple[bytes, bytes]] = ()) -> None:
        """Answer an error before routing (no body read), counted under the route it was meant for."""
        body = msgspec.json.encode(error_body(code, message, field))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON), *headers]})
        await send({"type": "http.response.body", "body": body})
        if self.request_metrics is not None:
            self.request_metrics.observe(self._template(scope), scope["method"], status, 0.0)

    def _template(self, scope) -> str:
        if scope["path"] in self.fast_routes or scope["path"] in self.fast_gets:
            return scope["path"]
        for route in self.router.routes:
            if route.matches(scope)[0] is not Match.NONE:
                return getattr(route, "path", "unmatched")
        return "unmatched"

    def fast_post(self, path: str, handler: FastHandler, **route: Any) -> None:
        """Serve `POST path` with `handler` (a RawRequest in, a `FastHandler` answer out), ahead of FastAPI.

        The FastAPI route is declared too, with `route`'s keywords (summary, openapi_extra, responses...): it
        documents the endpoint in /docs and runs the same handler for a request that reaches the router.
        """

        async def endpoint(request: Request) -> Response:
            answer = await handler(RawRequest(request.scope, request.receive))
            status, body = _status_and_body(answer)
            return Response(body, status_code=status, media_type="application/json")

        self.post(path, name=handler.__name__, response_model=None, **route)(endpoint)
        self.fast_routes[path] = handler


_JSON = b"application/json"


def _status_and_body(answer: bytes | tuple[int, bytes]) -> tuple[int, bytes]:
    """A fast route handler's answer as (status, JSON body): bare bytes mean 200."""
    return answer if isinstance(answer, tuple) else (200, answer)


async def _run_check(check: HealthCheck) -> HealthResult:
    try:
        result = check()
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, timeout=2.0)
        return result
    except Exception as exc:  # a failing check is a health fact, not a crash
        return HealthResult("down", f"{type(exc).__name__}: {exc}")


def harden(app: App, token_file: Path | None, max_body_bytes: int | None = None) -> None:
    """What every DWCP HTTP app gets before its routes are added: JSON errors in one shape, the one JSON
    decoder and the body cap on every route (JsonRoute), and bearer tokens on writes when `token_file` is
    given. `create_app` calls it; so does the alert sink, which is not a ServiceContext service."""
    app.router.route_class = JsonRoute
    install_error_handlers(app)
    if token_file is not None:
        app.tokens = TokenFile(token_file)
    if max_body_bytes is not None:
        app.max_body_bytes = max_body_bytes
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate(), guarded=app.tokens is not None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["code", "message", "field"], "additionalProperties": False,
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "field": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}},
}
_ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
# What the runtime itself may answer, besides each route's own documented errors.
_RUNTIME_ERRORS = {
    400: "the body is not valid JSON (malformed, invalid UTF-8, nested too deeply)",
    401: "a write without a bearer token this service accepts",
    404: "nothing at this path (an unknown id, or no such route)",
    413: "the body is larger than this endpoint accepts",
    415: "a content type this endpoint does not take",
    422: "a field is missing, of the wrong type or out of range (the error names it)",
    503: "a dependency of this instance is not ready or is full; retry later",
}


def document_errors(schema: dict[str, Any], *, guarded: bool) -> dict[str, Any]:
    """The OpenAPI document with what every route may answer besides its own responses: the runtime's
    errors (one `Error` shape, replacing FastAPI's validation-error schema) and, when writes are guarded,
    the bearer scheme on every write operation."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    if guarded:
        components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            write = method.upper() in WRITE_METHODS
            if guarded and write:
                operation["security"] = [{"bearer": []}]
            responses = operation.setdefault("responses", {})
            has_body = "requestBody" in operation
            for status, why in _RUNTIME_ERRORS.items():
                if (status in (400, 413, 415) and not has_body) or (status == 401 and not (guarded and write)):
                    continue
                documented = responses.setdefault(str(status), {"description": why})
                documented["content"] = _ERROR_REF
    return schema


async def settle_heap() -> None:
    """A startup hook for the end of a service's startup: collect what is garbage now, and leave everything
    that survives (what the service keeps for its lifetime) out of later cyclic collections. Why: a full
    collection walks every tracked object (~66-70k in our services: the web stack plus the model, or the core
    and its restored log) and took 20-170 ms on this 2-core host, inside whichever request triggered it
    (docs/compression.md; docs/probft.md, "Session 6")."""
    gc.collect()
    gc.freeze()


def _warn_open(ctx: ServiceContext) -> Hook:
    async def warn() -> None:
        ctx.logger.warning("no token file: write endpoints are open to anyone who can connect",
                           extra={"event": "auth_disabled"})

    return warn


def create_app(
    ctx: ServiceContext,
    *,
    title: str,
    version: str = __version__,
    description: str = "",
    health_checks: dict[str, HealthCheck] | None = None,
    on_startup: list[Hook] | None = None,
    on_shutdown: list[Hook] | None = None,
    max_body_bytes: int | None = None,
    loop_lag_interval: float = LOOP_LAG_INTERVAL,
) -> App:
    """A FastAPI app with the DWCP plumbing; the caller adds its routes (hot POST ones with `fast_post`).

    Write requests need the bearer token of `ctx.token_file`; FastAPI-routed bodies are capped at
    `max_body_bytes` (default `MAX_BODY_BYTES`), fast routes cap their own (`RawRequest.body`)."""
    checks = dict(health_checks or {})
    startup, shutdown = list(on_startup or []), list(on_shutdown or [])
    started_at = time.time()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for hook in startup:
            await hook()
        ctx.logger.info("started", extra={"event": "started", "port": ctx.port})
        try:
            yield
        finally:
            # Stop in reverse order so later hooks (that may use earlier ones) go first.
            for hook in reversed(shutdown):
                try:
                    await hook()
                except Exception:
                    ctx.logger.exception("shutdown hook failed")
            ctx.logger.info("stopped", extra={"event": "stopped"})

    app = App(title=title, version=version, description=description, lifespan=lifespan)
    harden(app, ctx.token_file, max_body_bytes)
    app.state.ctx = ctx
    if ctx.token_file is None:
        startup.insert(0, _warn_open(ctx))
    for collector in (ProcessCollector, PlatformCollector):
        with contextlib.suppress(ValueError):  # already registered on a registry shared in tests
            collector(registry=ctx.registry)
    app.request_metrics = RequestMetrics(ctx.registry, ctx.job)
    lag = LoopLag(ctx.registry, ctx.job, interval=loop_lag_interval)
    app.state.loop_lag = lag

    async def watch_loop() -> None:
        lag.start()

    async def unwatch_loop() -> None:
        lag.stop()

    startup.insert(0, watch_loop)
    shutdown.insert(0, unwatch_loop)  # shutdown hooks run in reverse: this one last
    app.add_middleware(MetricsMiddleware, metrics=app.request_metrics)

    async def answer_health(_: RawRequest) -> tuple[int, bytes]:
        results = {name: await _run_check(check) for name, check in checks.items()}
        worst = max((r.status for r in results.values()), key=_SEVERITY.__getitem__, default="ok")
        body = {
            "status": worst,
            "service": ctx.job,
            "instance": ctx.instance,
            "pid": os.getpid(),
            "version": version,
            "uptime_seconds": round(time.time() - started_at, 3),
            "checks": {n: {"status": r.status, "detail": r.detail} for n, r in results.items()},
        }
        return 503 if worst == "down" else 200, msgspec.json.encode(body)

    # Answered ahead of FastAPI's layers (App.__call__), as a fast POST is: its routing, dependency
    # resolution and JSONResponse cost several times what the checks (cached facts) do, and under load
    # every extra step on the event loop is another chance to wait for the GIL.
    app.fast_gets["/health"] = answer_health

    @app.get("/health", tags=["runtime"], summary="Instance health with each dependency's status")
    async def health(request: Request) -> Response:
        status, body = await answer_health(RawRequest(request.scope, request.receive))
        return Response(body, status_code=status, media_type="application/json")

    @app.get("/metrics", tags=["runtime"], summary="Prometheus text exposition", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

    return app
