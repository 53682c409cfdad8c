"""The consensus share of `dwcp up`'s load: transactions submitted at a steady rate, some polled to commit.

Submissions rotate over the nodes (clients may talk to any replica). Below `BATCH_FROM` tx/s each
transaction is one `POST /v1/transactions`; from it on, the transactions due in each `BATCH_TICK` go as one
`POST /v1/batches` (what a real client under load does: a node forwards a batch to the primary as one
signed frame, and one request costs a node about what one transaction's request did). Every tenth
transaction is followed until it commits, so `GET /v1/transactions/{id}` sees real traffic too. HTTP
errors and unreachable nodes are expected while nodes restart: they are counted, never raised.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from dwcp.consensus.node.service import MAX_BATCH_TXS
from dwcp.runtime.waits import sleep_unless_stopped

POLL_EVERY = 10  # follow one transaction in ten to its commit
POLL_INTERVAL = 0.05  # first poll; each later one waits twice as long, up to POLL_INTERVAL_MAX
POLL_INTERVAL_MAX = 1.0
POLL_FOR = 10.0
# Submissions and followers in flight at once. Open loop, but bounded: when a cluster stalls, ticks past
# this are shed (counted) instead of piling up tasks and queued requests. Without a bound, a stalled
# cluster grew the shared HTTP client's queue until every profile of `dwcp up`'s load timed out.
MAX_IN_FLIGHT = 64
BATCH_TICK = 0.02  # seconds of due transactions per batch (a client's batching delay, counted in latency)
BATCH_FROM = 2 / BATCH_TICK  # tx/s from which a tick holds two or more transactions: batch them


@dataclass
class LoadStats:
    submitted: int = 0  # transactions (a batch counts each of its own)
    accepted: int = 0
    rejected: int = 0  # 4xx/5xx answers, and transactions a batch answer refused
    failed: int = 0  # no answer (node down, timeout)
    shed: int = 0  # ticks not submitted because MAX_IN_FLIGHT requests were still outstanding
    committed: int = 0
    batches: int = 0  # POST /v1/batches requests sent
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
        _track(tasks, _follow(client, url, r.json()["id"], started, stats))


def _track(tasks: set[asyncio.Task], coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def submit_batch(
    client: httpx.AsyncClient, url: str, payloads: list[bytes], stats: LoadStats, follow: list[int],
    tasks: set[asyncio.Task],
) -> None:
    """One `POST /v1/batches`; the transactions at indexes `follow` are polled to commit."""
    started = time.monotonic()
    stats.submitted += len(payloads)
    stats.batches += 1
    try:
        r = await client.post(f"{url}/v1/batches",
                              json={"payloads": [base64.b64encode(p).decode() for p in payloads]})
    except httpx.HTTPError:
        stats.failed += len(payloads)
        return
    if r.status_code != 202:
        stats.rejected += len(payloads)
        return
    answers = r.json()["transactions"]
    refused = sum(1 for a in answers if a["status"] == "refused")
    stats.accepted += len(answers) - refused
    stats.rejected += refused
    for i in follow:
        if answers[i]["status"] != "refused" and len(tasks) < MAX_IN_FLIGHT:
            _track(tasks, _follow(client, url, answers[i]["id"], started, stats))


async def _sleep_until(at: float, stop: asyncio.Event) -> None:
    await sleep_unless_stopped(stop, at - time.monotonic())


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
    try:
        if rate >= BATCH_FROM:
            await _drive_batches(base_urls, client, stop, rate, stats, payload_size, tasks)
        else:
            await _drive_singles(base_urls, client, stop, rate, stats, payload_size, tasks)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _drive_singles(base_urls: Sequence[str], client: httpx.AsyncClient, stop: asyncio.Event, rate: float,
                         stats: LoadStats, payload_size: int, tasks: set[asyncio.Task]) -> None:
    interval = 1.0 / rate
    urls = itertools.cycle(base_urls)
    next_at = time.monotonic()
    for seq in itertools.count():
        if stop.is_set():
            break
        # Open-loop: each submission is its own task, so a slow node does not slow the offered rate.
        if len(tasks) < MAX_IN_FLIGHT:
            _track(tasks, submit_one(client, next(urls), make_payload(seq, payload_size), stats,
                                     seq % POLL_EVERY == 0, tasks))
        else:
            stats.shed += 1
        next_at += interval
        await _sleep_until(next_at, stop)
        if next_at - time.monotonic() < -1.0:
            next_at = time.monotonic()  # far behind (machine stalled): don't burst to catch up


async def _drive_batches(base_urls: Sequence[str], client: httpx.AsyncClient, stop: asyncio.Event, rate: float,
                         stats: LoadStats, payload_size: int, tasks: set[asyncio.Task]) -> None:
    """Transaction k is due at start + k / rate (as one by one); each tick sends the due ones as one batch."""
    urls = itertools.cycle(base_urls)
    start = time.monotonic()
    sent = 0  # transactions due since `start`, sent or shed
    seq = 0
    while not stop.is_set():
        now = time.monotonic()
        if (now - start) * rate - sent > rate:  # over a second behind (machine stalled): don't burst
            start, sent = now, 0
        due = min(int((now - start) * rate) + 1 - sent, MAX_BATCH_TXS)
        if due > 0:
            if len(tasks) < MAX_IN_FLIGHT:
                seqs = range(seq, seq + due)
                follow = [i for i, k in enumerate(seqs) if k % POLL_EVERY == 0]
                _track(tasks, submit_batch(client, next(urls), [make_payload(k, payload_size) for k in seqs],
                                           stats, follow, tasks))
            else:
                stats.shed += due
            sent += due
            seq += due
        await _sleep_until(now + BATCH_TICK, stop)
