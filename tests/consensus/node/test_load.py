"""The `dwcp up` load profile against one in-process node (ASGI, no sockets): it submits, never raises."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from dwcp.consensus.node.load import MAX_IN_FLIGHT, LoadStats, drive, make_payload
from dwcp.consensus.node.service import build_app
from dwcp.runtime.auth import bearer_header, client_token
from dwcp.runtime.server import build_context
from tests.consensus.conftest import keyed_inventory


def test_payloads_are_unique_and_sized() -> None:
    assert make_payload(1) != make_payload(1)
    assert len(make_payload(7, size=100)) == 100


async def test_drive_submits_at_about_the_rate_and_stops(tmp_path: Path) -> None:
    spec = {"replicas": 4, "base_port": 18300, "base_ports": {"consensus": 19300}}
    inv = keyed_inventory({"services": {"tpbft": spec}}, "tpbft", tmp_path / "keys")
    ctx = build_context(inv, "tpbft", 0, tmp_path)
    app = build_app(ctx)
    stats, stop = LoadStats(), asyncio.Event()
    token = bearer_header(client_token(ctx.token_file))
    rate, wanted = 100.0, 30
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), headers=token) as client:
        started = time.monotonic()
        task = asyncio.create_task(drive(["http://node-a", "http://node-b"], client, stop, rate=rate, stats=stats))
        deadline = started + 30  # liveness only: unloaded, 30 submissions take 0.3 s
        while stats.submitted < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(task, 5)
        stopped_at = stats.submitted
        await asyncio.sleep(0.05)
    app.state.driver.store.close()
    assert stats.submitted >= wanted, f"{stats.submitted} submissions in {elapsed:.1f} s"
    # Tick k is due at start + k/rate and never sent early, so no machine load can push the count above
    # this (a starved loop only falls behind); a driver that ignored the rate would burst far past it.
    assert stats.submitted <= int(rate * elapsed) + 1, (stats.submitted, elapsed)
    assert stats.submitted == stopped_at  # stopped: nothing is sent after stop is set
    assert stats.accepted == stats.submitted - stats.failed and stats.rejected == 0
    assert app.state.driver.status()["pending"] == stats.accepted


@pytest.mark.network
async def test_unreachable_nodes_are_counted_not_raised() -> None:
    stats, stop = LoadStats(), asyncio.Event()
    async with httpx.AsyncClient(timeout=0.2) as client:
        task = asyncio.create_task(drive(["http://127.0.0.1:9"], client, stop, rate=50.0, stats=stats))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert stats.submitted > 0 and stats.accepted == 0


async def test_a_stalled_cluster_sheds_load_instead_of_piling_up_requests() -> None:
    """A cluster that never answers holds at most MAX_IN_FLIGHT requests; later ticks are counted as shed."""
    answered = asyncio.Event()
    outstanding = 0
    peak = 0

    async def stalled(scope, receive, send) -> None:
        nonlocal outstanding, peak
        outstanding += 1
        peak = max(peak, outstanding)
        try:
            await answered.wait()  # never set: every request hangs until the client gives up
        finally:
            outstanding -= 1

    stats, stop = LoadStats(), asyncio.Event()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stalled), timeout=30) as client:
        task = asyncio.create_task(drive(["http://node-a"], client, stop, rate=1000.0, stats=stats))
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert stats.submitted == MAX_IN_FLIGHT and peak == MAX_IN_FLIGHT
    assert stats.shed > 100
