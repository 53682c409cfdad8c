"""`dwcp load`: drive every built service's own request mix at its instances.

Each service package owns its profile (`dwcp/<pkg>/load.py: drive(base_urls, client, stop, rate)`); this
module only finds them, gives each its own HTTP client (sending each service its bearer token, runtime.auth),
and runs them side by side until stopped. One client per profile is a bulkhead: a stalled service holds only
its own profile's connections, so the others' load keeps flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal

import httpx

from dwcp.runtime.auth import client_auth
from dwcp.runtime.inventory import Inventory
from dwcp.runtime.logs import setup_logging
from dwcp.runtime.services import SERVICE_KINDS, importable
from dwcp.runtime.tls import TlsFileError, client_verify
from dwcp.runtime.waits import sleep_unless_stopped

log = logging.getLogger("dwcp.load")
PROFILE_CONNECTIONS = 32  # per service profile's client


async def _drive_all(inv: Inventory, rate: float, duration: float, only: set[str]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    drivers = []
    for key, spec in inv.runnable().items():
        kind = SERVICE_KINDS[key]
        if only and key not in only and spec.job not in only:
            continue
        if not importable(kind.load_module):
            log.warning("%s has no load profile yet; not driving it", key)
            continue
        drive = importlib.import_module(kind.load_module).drive
        urls = [inst.url for inst in spec.instances]
        drivers.append((key, drive, urls))
    if not drivers:
        log.error("nothing to drive: no built service with a load profile")
        return 2
    limits = httpx.Limits(max_connections=PROFILE_CONNECTIONS, max_keepalive_connections=PROFILE_CONNECTIONS)
    auth = client_auth(inv, keys=[key for key, _, _ in drivers])
    try:
        verify = client_verify(inv, [key for key, _, _ in drivers])
    except TlsFileError as exc:
        log.error("cannot verify the services' TLS certificates: %s", exc)
        return 2
    async with contextlib.AsyncExitStack() as clients:
        tasks = []
        for key, drive, urls in drivers:
            client = await clients.enter_async_context(
                httpx.AsyncClient(timeout=10.0, limits=limits, auth=auth, verify=verify))
            tasks.append(asyncio.create_task(drive(urls, client, stop, rate), name=f"load-{key}"))
        log.info("driving %s at %.1f req/s each", ", ".join(k for k, _, _ in drivers), rate)
        if duration > 0:
            if not await sleep_unless_stopped(stop, duration):
                stop.set()
        else:
            await stop.wait()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = 0
    for (key, _, _), result in zip(drivers, results, strict=True):
        if isinstance(result, BaseException):
            failed += 1
            log.error("load profile %s failed: %r", key, result)
    return 1 if failed else 0


def run_load(inv: Inventory, *, rate: float, duration: float = 0.0, only: set[str] | None = None) -> int:
    setup_logging("info", component="loadgen")
    # httpx logs every request at INFO: at dwcp up's rates that is most of the generator's own CPU.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(_drive_all(inv, rate, duration, only or set()))
