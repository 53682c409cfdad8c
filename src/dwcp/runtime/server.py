"""Run one service instance under uvicorn: what `dwcp serve SERVICE --instance N` does."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import functools
import json
import logging
import os
import resource
import time
from collections import OrderedDict
from email.utils import formatdate
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from dwcp.runtime.auth import RUN_DIR_ENV, ensure_token_file, token_path
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.errors import error_body
from dwcp.runtime.inventory import HttpLimits, Inventory, InventoryError
from dwcp.runtime.logs import setup_logging
from dwcp.runtime.services import resolve_kind
from dwcp.runtime.tls import HttpTls, TlsFileError, server_context, server_files

__all__ = ["RUN_DIR_ENV", "ConnectionGuard", "HttpProtocol", "QuietServer", "build_context", "default_data_root",
           "run_app", "serve"]


def default_data_root() -> Path:
    """`$DWCP_RUN_DIR/data` under `dwcp up`; otherwise ./dwcp-data for a hand-started instance."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    return Path(run_dir) / "data" if run_dir else Path("dwcp-data")


def build_context(inventory: Inventory, service: str, instance: int, data_root: Path | None = None) -> ServiceContext:
    """Everything an instance needs to know about itself, from the inventory alone."""
    kind = resolve_kind(service)
    spec = inventory.spec(kind.key)
    inst = inventory.instance(kind.key, instance)
    if not kind.built:
        raise InventoryError(f"service {kind.key!r} ({kind.job}) is not built in this version of dwcp")
    data_root = data_root or default_data_root()
    data_dir = data_root / f"{kind.key}-{instance}"
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)  # a service's stores are its own
    try:
        token_file = ensure_token_file(token_path(inventory, kind.key, data_root))
    except (OSError, ValueError) as exc:
        raise InventoryError(f"{inventory.source}: services.{kind.key}: {exc}") from None
    try:
        tls = server_files(inventory, kind.key)
    except TlsFileError as exc:
        raise InventoryError(f"{inventory.source}: services.{kind.key}.tls: {exc}") from None
    return ServiceContext(
        service=kind.key,
        job=spec.job,
        instance=instance,
        host=inst.host,
        port=inst.port,
        ports=dict(inst.ports),
        settings=spec.settings,
        inventory=inventory,
        data_dir=data_dir,
        logger=logging.getLogger(f"dwcp.{kind.key}"),
        token_file=token_file,
        tls=tls,
    )


class CoalescedWrites:
    """A connection's transport whose writes within one event-loop step go out as one `send`.

    uvicorn writes a response's head and body separately: two TCP segments, and a client woken twice per
    response. Deferring to the end of the step (`call_soon`) joins them, and answers to pipelined requests too.
    """

    def __init__(self, transport, loop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


# Connections the kernel may hold completed before the process accepts them (capped by net.core.somaxconn):
# during a flood, a probe that finds this queue full waits a SYN retransmit (1 s).
LISTEN_BACKLOG = 8192
# Connections a header-timeout sweep drops per event-loop step: 10,000 at once would stall the loop ~100 ms.
SWEEP_BATCH = 64
# How long a connection refused with 431 may take to read that answer before it is aborted anyway: the answer
# is one small write, so this only matters for a client that does not read, which must not keep a descriptor.
REFUSAL_GRACE_S = 1.0


def head_too_large(limit: int) -> bytes:
    """The whole 431 answer (JSON error naming `headers`) sent before closing a connection whose head is too big."""
    body = json.dumps(error_body("header_too_large", f"headers: the request head exceeds {limit} bytes",
                                 "headers")).encode()
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))


class ConnectionGuard:
    """What connections that have not sent a whole request head may hold: the slow-loris and descriptor bound.

    A connection is *waiting* from accept, and again from the end of each response, until its next request
    head (request line and headers) is complete. A waiting connection is dropped `header_timeout_s` after
    it began waiting, however slowly it trickles bytes, and as soon as its head passes `max_header_bytes`
    (answered 431 with the JSON error first, and aborted `REFUSAL_GRACE_S` later if it has not gone by then).
    At `max_connections`, a new connection evicts the oldest waiting one, so a flood of half-open
    connections can never keep a health probe out; when none is waiting (every connection has a request in
    flight) the new one is dropped instead. One guard per process; the event loop is its only thread.
    """

    def __init__(self, limits: HttpLimits, clock=time.monotonic) -> None:
        self.max_connections = limits.max_connections
        self.header_timeout_s = limits.header_timeout_s
        self.max_header_bytes = limits.max_header_bytes
        self._clock = clock
        self.live: set[HttpProtocol] = set()
        self.waiting: OrderedDict[HttpProtocol, float] = OrderedDict()  # -> deadline, oldest first
        self.dropped = {"evicted": 0, "header_timeout": 0, "header_too_large": 0, "over_limit": 0}
        self._sweeper: asyncio.TimerHandle | None = None
        self._too_large = head_too_large(limits.max_header_bytes)

    def opened(self, conn: HttpProtocol) -> bool:
        """Admit a new connection (False: drop it), evicting the oldest waiting one when at the limit."""
        if len(self.live) >= self.max_connections:
            if not self.waiting:
                self.dropped["over_limit"] += 1
                return False
            oldest, _ = self.waiting.popitem(last=False)
            self._drop(oldest, "evicted")
        self.live.add(conn)
        self.wait(conn)
        return True

    def wait(self, conn: HttpProtocol) -> None:
        """`conn` now waits for a request head (new, or idle after a response)."""
        conn.head_bytes = 0
        self.waiting[conn] = self._clock() + self.header_timeout_s
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(self.header_timeout_s / 4, self._sweep, conn.loop)

    def received(self, conn: HttpProtocol, size: int) -> bool:
        """Count head bytes of a waiting connection; False (and dropped) once they pass the limit."""
        if conn not in self.waiting:
            return True
        conn.head_bytes += size
        if conn.head_bytes <= self.max_header_bytes:
            return True
        self.waiting.pop(conn)
        self.live.discard(conn)
        self.dropped["header_too_large"] += 1
        conn.refused = True  # what it still sends is read and discarded, never parsed
        # The answer, then our side closed (FIN) while the rest of its head is read and discarded: closing with
        # unread bytes would send a reset, which can destroy the 431 before the client reads it.
        conn.transport.write(self._too_large)
        if conn.transport.can_write_eof():
            conn.transport.write_eof()
        else:  # TLS: no half-close
            conn.transport.close()
        conn.loop.call_later(REFUSAL_GRACE_S, conn.transport.abort)
        return False

    def busy(self, conn: HttpProtocol) -> None:
        """`conn`'s request head is complete: it is the application's until the response ends."""
        self.waiting.pop(conn, None)

    def closed(self, conn: HttpProtocol) -> None:
        self.live.discard(conn)
        self.waiting.pop(conn, None)

    def _drop(self, conn: HttpProtocol, why: str) -> None:
        self.live.discard(conn)
        self.dropped[why] += 1
        conn.transport.abort()  # frees the descriptor now; a half-sent head has nothing to flush

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = self._clock()
        for _ in range(SWEEP_BATCH):
            if not self.waiting:
                break
            conn, deadline = next(iter(self.waiting.items()))
            if deadline > now:
                break
            self.waiting.popitem(last=False)
            self._drop(conn, "header_timeout")
        else:  # more may be due: go on next loop step, so requests in flight are served in between
            self._sweeper = loop.call_later(0, self._sweep, loop)
            return
        self._sweeper = loop.call_later(self.header_timeout_s / 4, self._sweep, loop) if self.waiting else None


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a `CoalescedWrites` transport, under a `ConnectionGuard`."""

    head_bytes = 0
    refused = False  # answered 431: the guard closes it soon, and nothing more it sends is parsed

    def __init__(self, *args, guard: ConnectionGuard | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescedWrites(transport, self.loop))
        if self.guard is not None and not self.guard.opened(self):
            transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.guard is not None and self in self.guard.waiting:
            # Count only the head: the read that completes it also carries the start of the body (a large
            # PUT's first read holds up to 256 KiB of it), which is not head bytes and must not get the
            # connection dropped as header_too_large.
            end = data.find(b"\r\n\r\n")
            if not self.guard.received(self, len(data) if end < 0 else end + 4):
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        if self.guard is not None:
            self.guard.busy(self)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        idle = not self.pipeline
        super().on_response_complete()
        if self.guard is not None and idle and not self.transport.is_closing():
            self.guard.wait(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.guard is not None:
            self.guard.closed(self)
        super().connection_lost(exc)


def raise_descriptor_limit() -> int:
    """Raise this process's open-descriptor limit to its hard limit; returns the (soft) limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_limit(limits: HttpLimits, descriptors: int) -> int:
    """`max_connections`, kept under the descriptor limit with room for the service's own files and peers."""
    reserve = max(256, descriptors // 8)
    return max(16, min(limits.max_connections, descriptors - reserve))


def serve(ctx: ServiceContext, *, bind_host: str | None = None, log_level: str = "info") -> None:
    """Build the service's app and serve it until SIGINT/SIGTERM (uvicorn drains, then runs shutdown hooks)."""
    setup_logging(log_level, service=ctx.job, instance=ctx.instance)
    app = resolve_kind(ctx.service).build_app_function()(ctx)
    run_app(app, bind_host or ctx.host, ctx.port, ctx.inventory.security.http, ctx.registry, tls=ctx.tls)


class GuardCollector:
    """The guard's state as metrics: what a connection flood looks like from inside the process."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def collect(self):
        open_now = GaugeMetricFamily("dwcp_http_connections", "HTTP connections this process holds, by state "
                                     "(waiting: no complete request head yet).", labels=["state"])
        open_now.add_metric(["open"], len(self.guard.live))
        open_now.add_metric(["waiting"], len(self.guard.waiting))
        dropped = CounterMetricFamily("dwcp_http_connections_dropped", "HTTP connections the server closed itself: "
                                      "evicted at the connection limit, over_limit (none evictable), header_timeout, "
                                      "header_too_large.", labels=["reason"])
        for reason, count in self.guard.dropped.items():
            dropped.add_metric([reason], count)
        return [open_now, dropped]


def run_app(app, host: str, port: int, limits: HttpLimits, registry: CollectorRegistry | None = None, *,
            tls: HttpTls | None = None) -> None:
    """Serve an ASGI app under the limits: descriptor limit raised, a ConnectionGuard on every connection (its
    counts exported to `registry` when given); HTTPS only when `tls` is given (runtime.tls)."""
    descriptors = raise_descriptor_limit()
    guarded = limits.model_copy(update={"max_connections": connection_limit(limits, descriptors)})
    guard = ConnectionGuard(guarded)
    if registry is not None:
        registry.register(GuardCollector(guard))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=limits.keep_alive_s,
        lifespan="on",
        loop="uvloop",
        http=_tls_wrapped(functools.partial(HttpProtocol, guard=guard), tls, limits.header_timeout_s)
        if tls else functools.partial(HttpProtocol, guard=guard),
        backlog=LISTEN_BACKLOG,
    )
    logging.getLogger("dwcp.runtime.server").info(
        "connection limits", extra={"event": "limits", "max_connections": guarded.max_connections,
                                    "descriptors": descriptors, "header_timeout_s": limits.header_timeout_s})
    QuietServer(config).run()


class DatedState(ServerState):
    """uvicorn's shared server state, whose `default_headers` (the `date` header, then the configured ones) are
    made when a response asks for them, once per wall-clock second, instead of by a 10 Hz tick."""

    def __init__(self, config: uvicorn.Config, clock=time.time) -> None:
        super().__init__()
        self._config = config  # its encoded_headers are made by config.load(), when the server starts
        self._clock = clock
        self._second = -1
        self._headers: list[tuple[bytes, bytes]] = []

    @property  # type: ignore[override]
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        if not self._config.date_header:
            return self._config.encoded_headers
        now = self._clock()
        if int(now) != self._second:
            self._second = int(now)
            self._headers = [(b"date", formatdate(now, usegmt=True).encode()), *self._config.encoded_headers]
        return self._headers

    @default_headers.setter
    def default_headers(self, value: list[tuple[bytes, bytes]]) -> None:
        pass  # uvicorn's tick sets them; here they are made on demand


class QuietServer(uvicorn.Server):
    """uvicorn's Server without its 10 Hz tick: the process sleeps until a signal (or `should_exit = True`) ends it.

    uvicorn's `main_loop` wakes every 100 ms to see whether a signal set `should_exit` and, every tenth time,
    to remake the `date` header; in an idle service that tick was the largest periodic wake-up left (issue 12).
    Here the date header is made on demand by `DatedState`, and setting `should_exit` (uvicorn's signal
    handler does, as do tests that run a server in a thread) wakes the loop through `call_soon_threadsafe`.
    Shutdown is uvicorn's own, unchanged (drain for `timeout_graceful_shutdown`, then lifespan shutdown). With
    `limit_max_requests` or `callback_notify` configured (their checks live in the tick) it ticks as uvicorn does.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None
    _exit = False

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ticks = config.limit_max_requests is not None or config.callback_notify is not None
        if not self.ticks:
            self.server_state = DatedState(config)

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._exit = value
        loop, wake = self._loop, self._wake
        if value and loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits any more
                loop.call_soon_threadsafe(wake.set)

    async def main_loop(self) -> None:
        if self.ticks:
            await super().main_loop()
            return
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            while not self.should_exit:
                await self._wake.wait()
                self._wake.clear()
        finally:
            self._loop = self._wake = None


def _tls_wrapped(make_http, tls: HttpTls, handshake_timeout_s: float):
    """A protocol factory that runs TLS in front of each `make_http()` connection, the handshake bounded by
    `handshake_timeout_s`.

    uvicorn's own TLS (`ssl_certfile`) hands the context to `loop.create_server` with no way to set the
    handshake timeout (60 s by default), so a slow-handshake flood would hold descriptors six times longer
    than a slow-loris flood of plain HTTP. asyncio's SSLProtocol is what `create_server(ssl=...)` builds
    itself; built here, it takes the timeout, and uvicorn sees an ordinary (already decrypted) connection.
    """
    context = server_context(tls)

    def factory(**kwargs) -> asyncio.BaseProtocol:
        http = make_http(**kwargs)
        return asyncio.sslproto.SSLProtocol(http.loop, http, context, None, server_side=True,
                                            ssl_handshake_timeout=handshake_timeout_s)

    return factory

