"""HTTP API of the allocator (routes only; the state machine is `ledger.Ledger`).

Handlers are `async def` and never await while changing state, so requests are serialised on the event
loop and the ledger needs no lock.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from dwcp.allocator.cluster import HostSpec, load_cluster
from dwcp.allocator.evaluate import make_policy
from dwcp.allocator.ledger import Ledger, LedgerError
from dwcp.allocator.metrics import AllocatorMetrics
from dwcp.allocator.settings import MAX_ALLOCATION_S, AllocatorSettings
from dwcp.allocator.store import Store
from dwcp.runtime.app import HealthResult, create_app
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.errors import ApiError

# Physical bounds of one host (and so of one demand): beyond them a value is a mistake or an attack, and
# would push the cost meters to inf for good (they persist).
MAX_CPU_CORES = 4096.0
MAX_MEM_GIB = 65_536.0  # 64 TiB
MAX_NET_MBPS = 1_000_000.0  # 1 Tbit/s
MAX_WAIT_S = 7 * 86_400.0
MAX_DURATION_S = MAX_ALLOCATION_S  # the settings' max_duration_s may only lower it
# The smallest host worth scheduling on (a millicore, 1 MiB, 1 kbit/s). Features divide by a host's capacity,
# so a denormal capacity such as 5e-324 (which `gt=0` would let in) overflowed them to inf.
MIN_HOST_CPU_CORES = 0.001
MIN_HOST_MEM_GIB = 1 / 1024
MIN_HOST_NET_MBPS = 0.001


def _json_number(value: object) -> object:
    """JSON numbers only, as the schema says: pydantic's lax mode would take `true` for 1 and "3" for 3 (and
    strict mode would refuse 3.0 for an integer, which JSON Schema calls an integer)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


Number = Annotated[float, BeforeValidator(_json_number)]
Integer = Annotated[int, BeforeValidator(_json_number)]


class Demand(BaseModel):
    # The validator below (some resource must be positive) in JSON Schema terms, so clients and Schemathesis
    # know `{}` and all-zero demands are refused.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": [name], "properties": {name: {"exclusiveMinimum": 0}}} for name in ("cpu", "mem", "net")]})
    cpu: Number = Field(0.0, ge=0, le=MAX_CPU_CORES, allow_inf_nan=False, description="cores")
    mem: Number = Field(0.0, ge=0, le=MAX_MEM_GIB, allow_inf_nan=False, description="GiB")
    net: Number = Field(0.0, ge=0, le=MAX_NET_MBPS, allow_inf_nan=False, description="Mbit/s")

    @model_validator(mode="after")
    def _some(self) -> Demand:
        if self.cpu == 0 and self.mem == 0 and self.net == 0:
            raise ValueError("at least one of cpu, mem, net must be positive")
        return self


class AllocationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    demand: Demand
    duration_s: Number = Field(gt=0, le=MAX_DURATION_S, allow_inf_nan=False,
                              description="seconds the allocation lasts (at most the service's max_duration_s)")
    max_wait_s: Number = Field(0.0, ge=0, le=MAX_WAIT_S, allow_inf_nan=False,
                              description="SLA: longest acceptable wait")
    host: str | None = Field(None, max_length=128, description="pin to this host (it must have room)")


class AllocationResponse(BaseModel):
    id: str
    host: str
    start: float
    end: float
    policy: str


class HostRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    cpu: Number = Field(ge=MIN_HOST_CPU_CORES, le=MAX_CPU_CORES, allow_inf_nan=False, description="cores")
    mem: Number = Field(ge=MIN_HOST_MEM_GIB, le=MAX_MEM_GIB, allow_inf_nan=False, description="GiB")
    net: Number = Field(ge=MIN_HOST_NET_MBPS, le=MAX_NET_MBPS, allow_inf_nan=False, description="Mbit/s")
    group: Integer = Field(0, ge=0, le=1023)


def _api(exc: LedgerError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, exc.field)


def build_app(ctx: ServiceContext, clock=time.time) -> FastAPI:
    settings: AllocatorSettings = ctx.settings if isinstance(ctx.settings, AllocatorSettings) else \
        AllocatorSettings.model_validate(ctx.settings or {})
    metrics = AllocatorMetrics(ctx.registry)
    store = Store(Path(ctx.data_dir) / settings.database)
    if settings.register_default_cluster and not store.hosts():
        for h in load_cluster(settings.cluster_file):
            store.add_host(h)
    ledger = Ledger(store, make_policy(settings.policy, settings.checkpoint, settings.seed),
                    make_policy(settings.shadow_policy, settings.checkpoint, settings.seed), clock())
    # Counters restart from the stored totals so a restart does not reset rates to zero.
    metrics.total.inc(ledger.c["total"])
    metrics.successful.inc(ledger.c["successful"])

    def publish() -> None:
        metrics.optimization.set(ledger.optimization_pct)
        metrics.sla_compliance.set(ledger.sla_compliance)
        metrics.active.set(len(ledger.meta))

    publish()

    async def close() -> None:
        store.close()

    def db_health() -> HealthResult:
        store.db.execute("SELECT 1").fetchone()
        return HealthResult("ok", f"{ledger.live.n_hosts} hosts, {len(ledger.meta)} allocations")

    app = create_app(ctx, title="DWCP MADDPG allocator",
                     description="Stateful cluster allocation by a MADDPG policy, with a round-robin shadow.",
                     health_checks={"store": db_health}, on_shutdown=[close])
    app.state.ledger = ledger

    @app.post("/v1/hosts", status_code=201, tags=["allocator"], summary="Register a host and its capacity",
              responses={409: {"description": "a host of this name is already registered"}})
    async def add_host(req: HostRequest) -> dict:
        try:
            ledger.add_host(HostSpec(req.name, req.cpu, req.mem, req.net, req.group), clock())
        except LedgerError as exc:
            raise _api(exc) from None
        return req.model_dump()

    @app.get("/v1/hosts/{name}", tags=["allocator"], summary="One host's capacity and use")
    async def get_host(name: str) -> dict:
        ledger.refresh(clock())
        for h in ledger.cluster_view()["hosts"]:
            if h["name"] == name:
                return h
        raise ApiError(404, "unknown_host", f"host {name!r} is not registered", "name")

    @app.post("/v1/allocations", status_code=201, response_model=AllocationResponse, tags=["allocator"],
              summary="Place a workload, or refuse it (409 no_capacity) when no host has room now",
              responses={409: {"description": "no host has room now (SLA missed), none could ever hold the demand, "
                                               "the pinned host is not registered, or no hosts are registered"},
                         422: {"description": "bad input: a field missing, of the wrong type or out of range"}})
    async def allocate(req: AllocationRequest) -> AllocationResponse:
        t0 = time.perf_counter()
        if req.duration_s > settings.max_duration_s:
            raise ApiError(422, "invalid_input", f"duration_s must be <= {settings.max_duration_s}", "duration_s")
        demand = np.array([req.demand.cpu, req.demand.mem, req.demand.net], dtype=np.float64)
        try:
            p = ledger.allocate(demand, req.duration_s, req.max_wait_s, clock(), req.host)
        except LedgerError as exc:
            raise _api(exc) from None
        metrics.total.inc()
        if p.host is not None:
            metrics.successful.inc()
            metrics.inference_duration.observe(p.inference_s)
        publish()
        metrics.allocation_duration.observe(time.perf_counter() - t0)
        if p.host is None:
            raise ApiError(409, "no_capacity", "no host has room for this demand now; retry later or reduce it",
                           "demand")
        return AllocationResponse(id=p.id, host=p.host, start=p.start, end=p.end, policy=ledger.policy.name)

    @app.delete("/v1/allocations/{alloc_id}", status_code=204, tags=["allocator"],
                summary="Release an allocation (204 also when it has already ended: releasing is idempotent)",
                responses={404: {"description": "no such allocation was issued (recently) by this instance"}})
    async def release(alloc_id: str) -> Response:
        try:
            ledger.release(alloc_id, clock())
        except LedgerError as exc:
            raise _api(exc) from None
        publish()
        return Response(status_code=204)

    @app.get("/v1/allocations/{alloc_id}", tags=["allocator"], summary="One active allocation")
    async def get_allocation(alloc_id: str) -> dict:
        ledger.refresh(clock())
        rec = ledger.meta.get(alloc_id)
        if rec is None:
            raise ApiError(404, "unknown_allocation", f"allocation {alloc_id!r} is not active", "alloc_id")
        return {"id": rec.id, "host": rec.host, "demand": dict(zip(("cpu", "mem", "net"), rec.demand, strict=True)),
                "start": rec.start, "end": rec.end, "max_wait_s": rec.max_wait}

    @app.get("/v1/cluster", tags=["allocator"], summary="Hosts, use, cost meters and optimization vs shadow")
    async def cluster() -> dict:
        ledger.refresh(clock())
        publish()
        view = ledger.cluster_view()
        view["optimization_pct"] = view["optimization_pct"] if math.isfinite(view["optimization_pct"]) else 0.0
        return view

    return app
