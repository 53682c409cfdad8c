"""The consensus share of `dwcp up`'s load: transactions submitted at a steady rate, some polled to commit.

Submissions rotate over the nodes (clients may talk to any replica). Every tenth transaction is
followed until it commits, so `GET /v1/transactions/{id}` sees real traffic too. HTTP errors and
unreachable nodes are expected while nodes restart: they are counted, never raised.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

POLL_EVERY = 10  # follow one transaction in ten to its commit
POLL_INTERVAL = 0.05  # first poll; each later one waits twice as long, up to POLL_INTERVAL_MAX
POLL_INTERVAL_MAX = 1.0
POLL_FOR = 10.0
# Submissions and followers in flight at once. Open loop, but bounded: when a cluster stalls, ticks past
# this are shed (counted) instead of piling up tasks and queued requests. Without a bound, a stalled
# cluster grew the shared HTTP client's queue until every profile of `dwcp up`'s load timed out.
MAX_IN_FLIGHT = 64


@dataclass
class LoadStats:
    submitted: int = 0
    accepted: int = 0
    rejected: int = 0  # 4xx/5xx answers
    failed: int = 0  # no answer (node down, timeout)
    shed: int = 0  # ticks not submitted because MAX_IN_FLIGHT requests were still outstanding
    committed: int = 0
    latencies: list[float] = field(default_factory=list)  # submit -> seen committed, for polled txs


def make_payload(seq: int, size: int = 64) -> bytes:
    """Unique per call (random prefix), so re-runs never submit duplicates."""
    head = os.urandom(8) + seq.to_bytes(8, "big")
    return head + b"." * max(0, size - len(head))


async def _follow(client: httpx.AsyncClient, url: str, tx_id: str, started: float, stats: LoadStats) -> None:
    deadline, pause = started + POLL_FOR, POLL_INTERVAL
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            r = await client.get(f"{url}/v1/transactions/{tx_id}")
            if r.status_code == 200 and r.json().get("status") == "committed":
                stats.committed += 1
                stats.latencies.append(time.monotonic() - started)
                return
        await asyncio.sleep(pause)
        pause = min(pause * 2, POLL_INTERVAL_MAX)


async def submit_one(
    client: httpx.AsyncClient, url: str, payload: bytes, stats: LoadStats, follow: bool, tasks: set[asyncio.Task]
) -> None:
    started = time.monotonic()
    stats.submitted += 1
    try:
        r = await client.post(f"{url}/v1/transactions", json={"payload": base64.b64encode(payload).decode()})
    except httpx.HTTPError:
        stats.failed += 1
        return
    if r.status_code != 202:
        stats.rejected += 1
        return
    stats.accepted += 1
    if follow and len(tasks) < MAX_IN_FLIGHT:
        task = asyncio.create_task(_follow(client, url, r.json()["id"], started, stats))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def drive(
    base_urls: Sequence[str],
    client: httpx.AsyncClient,
    stop: asyncio.Event,
    rate: float,
    stats: LoadStats | None = None,
    payload_size: int = 64,
) -> None:
    """Submit ~`rate` tx/s spread over `base_urls` until `stop` is set; never raises on HTTP errors."""
    if not base_urls or rate <= 0:
        await stop.wait()
        return
    stats = stats if stats is not None else LoadStats()
    tasks: set[asyncio.Task] = set()
    interval = 1.0 / rate
    urls = itertools.cycle(base_urls)
    next_at = time.monotonic()
    try:
        for seq in itertools.count():
            if stop.is_set():
                break
            # Open-loop: each submission is its own task, so a slow node does not slow the offered rate.
            if len(tasks) < MAX_IN_FLIGHT:
                coro = submit_one(client, next(urls), make_payload(seq, payload_size), stats, seq % POLL_EVERY == 0,
                                  tasks)
                task = asyncio.create_task(coro)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                stats.shed += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            elif delay < -1.0:
                next_at = time.monotonic()  # far behind (machine stalled): don't burst to catch up
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
