"""The `dwcp up` load profile against one in-process node (ASGI, no sockets): it submits, never raises."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from dwcp.consensus.node.load import BATCH_FROM, MAX_IN_FLIGHT, LoadStats, drive, make_payload
from dwcp.consensus.node.service import build_app
from dwcp.runtime.auth import bearer_header, client_token
from dwcp.runtime.server import build_context
from tests.consensus.conftest import keyed_inventory


def test_payloads_are_unique_and_sized() -> None:
    assert make_payload(1) != make_payload(1)
    assert len(make_payload(7, size=100)) == 100


async def _drive_a_node(tmp_path: Path, rate: float, wanted: int) -> tuple[LoadStats, float, list[str], int]:
    """`drive` against one in-process node until `wanted` transactions went out: the stats, seconds taken,
    the paths of the POSTs sent, and the node's pending count."""
    spec = {"replicas": 4, "base_port": 18300, "base_ports": {"consensus": 19300}}
    inv = keyed_inventory({"services": {"tpbft": spec}}, "tpbft", tmp_path / "keys")
    ctx = build_context(inv, "tpbft", 0, tmp_path)
    app = build_app(ctx)
    stats, stop = LoadStats(), asyncio.Event()
    posts: list[str] = []

    async def note(request: httpx.Request) -> None:
        if request.method == "POST":
            posts.append(request.url.path)

    token = bearer_header(client_token(ctx.token_file))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), headers=token,
                                 event_hooks={"request": [note]}) as client:
        started = time.monotonic()
        task = asyncio.create_task(drive(["http://node-a", "http://node-b"], client, stop, rate=rate, stats=stats))
        deadline = started + 30  # liveness only: unloaded, this takes well under a second
        while stats.submitted < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(task, 5)
        stopped_at = stats.submitted
        await asyncio.sleep(0.05)
    pending = app.state.driver.status()["pending"]
    app.state.driver.store.close()
    assert stats.submitted >= wanted, f"{stats.submitted} submissions in {elapsed:.1f} s"
    # Tx k is due at start + k/rate and never sent early, so no machine load can push the count above
    # this (a starved loop only falls behind); a driver that ignored the rate would burst far past it.
    assert stats.submitted <= int(rate * elapsed) + 1, (stats.submitted, elapsed)
    assert stats.submitted == stopped_at  # stopped: nothing is sent after stop is set
    assert stats.accepted == stats.submitted - stats.failed and stats.rejected == 0
    return stats, elapsed, posts, pending


async def test_below_the_batch_rate_each_transaction_is_its_own_post(tmp_path: Path) -> None:
    stats, _, posts, pending = await _drive_a_node(tmp_path, rate=50.0, wanted=20)
    assert posts and set(posts) == {"/v1/transactions"} and len(posts) == stats.submitted
    assert pending == stats.accepted and stats.batches == 0


async def test_at_high_rates_the_due_transactions_go_as_one_batch_per_tick(tmp_path: Path) -> None:
    stats, elapsed, posts, pending = await _drive_a_node(tmp_path, rate=1000.0, wanted=300)
    assert posts and set(posts) == {"/v1/batches"} and len(posts) == stats.batches
    # ~20 per batch at 1000/s and a 20 ms tick; one POST each would have been `submitted` requests
    assert stats.batches <= stats.submitted / 4, (stats.batches, stats.submitted)
    assert pending == stats.accepted  # every transaction of every batch reached the node


@pytest.mark.network
async def test_unreachable_nodes_are_counted_not_raised() -> None:
    stats, stop = LoadStats(), asyncio.Event()
    async with httpx.AsyncClient(timeout=0.2) as client:
        task = asyncio.create_task(drive(["http://127.0.0.1:9"], client, stop, rate=50.0, stats=stats))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert stats.submitted > 0 and stats.accepted == 0


@pytest.mark.parametrize("rate", [90.0, 1000.0])
async def test_a_stalled_cluster_sheds_load_instead_of_piling_up_requests(rate: float) -> None:
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

    batched = rate >= BATCH_FROM
    stats, stop = LoadStats(), asyncio.Event()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stalled), timeout=30) as client:
        task = asyncio.create_task(drive(["http://node-a"], client, stop, rate=rate, stats=stats))
        deadline = time.monotonic() + 20  # unloaded: MAX_IN_FLIGHT ticks of BATCH_TICK (or 1 / rate) each
        while stats.shed < 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert peak == MAX_IN_FLIGHT and stats.shed >= 100
    assert (stats.batches if batched else stats.submitted) == MAX_IN_FLIGHT  # requests: all still hanging
