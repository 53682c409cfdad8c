"""The ASGI app every DWCP service is built on: `/health`, `/metrics`, JSON errors, request metrics.

Services call `create_app(ctx, ...)` and add their own routes; none of them re-implements any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from dwcp import __version__
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.errors import install_error_handlers

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
            route = scope.get("route")
            # The route template, never the raw path: raw paths carry ids and would explode cardinality.
            handler = getattr(route, "path", None) or "unmatched"
            if handler != "/metrics":
                m, method = self.metrics, scope.get("method", "")
                m.duration.labels(m.service, handler, method).observe(time.perf_counter() - start)
                m.requests.labels(m.service, handler, method, str(status)).inc()
                if status >= 400:
                    kind = "client" if status < 500 else "server"
                    m.errors.labels(m.service, handler, kind).inc()


async def _run_check(check: HealthCheck) -> HealthResult:
    try:
        result = check()
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, timeout=2.0)
        return result
    except Exception as exc:  # a failing check is a health fact, not a crash
        return HealthResult("down", f"{type(exc).__name__}: {exc}")


def create_app(
    ctx: ServiceContext,
    *,
    title: str,
    version: str = __version__,
    description: str = "",
    health_checks: dict[str, HealthCheck] | None = None,
    on_startup: list[Hook] | None = None,
    on_shutdown: list[Hook] | None = None,
) -> FastAPI:
    """A FastAPI app with the DWCP plumbing; the caller adds its routes."""
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

    app = FastAPI(title=title, version=version, description=description, lifespan=lifespan)
    app.state.ctx = ctx
    install_error_handlers(app)
    for collector in (ProcessCollector, PlatformCollector):
        with contextlib.suppress(ValueError):  # already registered on a registry shared in tests
            collector(registry=ctx.registry)
    app.add_middleware(MetricsMiddleware, metrics=RequestMetrics(ctx.registry, ctx.job))

    @app.get("/health", tags=["runtime"], summary="Instance health with each dependency's status")
    async def health() -> JSONResponse:
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
        return JSONResponse(body, status_code=503 if worst == "down" else 200)

    @app.get("/metrics", tags=["runtime"], summary="Prometheus text exposition")
    async def metrics() -> Response:
        return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

    return app
