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
POLL_INTERVAL = 0.05
POLL_FOR = 10.0


@dataclass
class LoadStats:
    submitted: int = 0
    accepted: int = 0
    rejected: int = 0  # 4xx/5xx answers
    failed: int = 0  # no answer (node down, timeout)
    committed: int = 0
    latencies: list[float] = field(default_factory=list)  # submit -> seen committed, for polled txs


def make_payload(seq: int, size: int = 64) -> bytes:
    """Unique per call (random prefix), so re-runs never submit duplicates."""
    head = os.urandom(8) + seq.to_bytes(8, "big")
    return head + b"." * max(0, size - len(head))


async def _follow(client: httpx.AsyncClient, url: str, tx_id: str, started: float, stats: LoadStats) -> None:
    deadline = started + POLL_FOR
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            r = await client.get(f"{url}/v1/transactions/{tx_id}")
            if r.status_code == 200 and r.json().get("status") == "committed":
                stats.committed += 1
                stats.latencies.append(time.monotonic() - started)
                return
        await asyncio.sleep(POLL_INTERVAL)


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
    if follow:
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
            coro = submit_one(client, next(urls), make_payload(seq, payload_size), stats, seq % POLL_EVERY == 0, tasks)
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
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
