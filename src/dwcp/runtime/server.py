"""Run one service instance under uvicorn: what `dwcp serve SERVICE --instance N` does."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dwcp.runtime.auth import RUN_DIR_ENV, ensure_token_file, token_path
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.inventory import Inventory, InventoryError
from dwcp.runtime.logs import setup_logging
from dwcp.runtime.services import resolve_kind

__all__ = ["RUN_DIR_ENV", "build_context", "default_data_root", "serve"]


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

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a `CoalescedWrites` transport."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescedWrites(transport, self.loop))


def serve(ctx: ServiceContext, *, bind_host: str | None = None, log_level: str = "info") -> None:
    """Build the service's app and serve it until SIGINT/SIGTERM (uvicorn drains, then runs shutdown hooks)."""
    setup_logging(log_level, service=ctx.job, instance=ctx.instance)
    app = resolve_kind(ctx.service).build_app_function()(ctx)
    config = uvicorn.Config(
        app,
        host=bind_host or ctx.host,
        port=ctx.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
        http=HttpProtocol,
    )
    uvicorn.Server(config).run()
