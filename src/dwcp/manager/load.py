"""dwcp-manager's share of `dwcp up` load: objects of mixed content stored at one site and sent to another,
transactions routed to the consensus clusters, and reads.

Objects (10% of operations): text, JSON logs, binary-like LZ data, VM-image-like data (zero runs between
data blocks) and random bytes, 16 KiB-8 MiB. A third of the puts rewrite an earlier key with a small
edit, so transfers of those travel as deltas. Each put is followed by a transfer to another site.
Transactions (60%): `auto`, or a cluster named explicitly (one the site's /health does not report
unavailable, so every cluster the deployment runs gets traffic), 5% of them retries of an earlier
idempotency key. Reads (30%):
HEAD of an object, transaction status, links. HTTP failures are counted and logged, never raised: load
keeps going while instances restart.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor

import httpx
import numpy as np

from dwcp.compression.corpus import json_logs, lz, random_bytes, text
from dwcp.manager.routing import ABSENT, CLUSTERS
from dwcp.runtime.waits import sleep_unless_stopped

log = logging.getLogger("dwcp.load.manager")
MAX_IN_FLIGHT = 32
KEYS_PER_FAMILY = 8


def vm_image(rng: np.random.Generator, size: int) -> bytes:
    """Disk-image-like: 64 KiB blocks, ~60% zero, the rest file-system-ish data."""
    out = bytearray()
    while len(out) < size:
        out += bytes(65536) if rng.random() < 0.6 else lz(rng, 65536)
    return bytes(out[:size])


FAMILIES = {"text": text, "logs": json_logs, "binary": lz, "vm": vm_image, "random": random_bytes}
# The share of object operations in the mix: each costs a transfer of up to 8 MiB, so they run at a
# fraction of the request rate.
OBJECT_SHARE = 0.1
TRANSACTION_SHARE = 0.6


def _edit(rng: np.random.Generator, body: bytes) -> bytes:
    at = int(rng.integers(0, max(1, len(body))))
    return body[:at] + rng.bytes(int(rng.integers(1, 256))) + body[at:]


def make_object(family: str, seed: int, size: int) -> bytes:
    """One object's body (run in the generator's maker process)."""
    return FAMILIES[family](np.random.default_rng(seed), size)


async def _object_round(client: httpx.AsyncClient, urls: list[str], rng: np.random.Generator,
                        last: dict[str, bytes], stored_at: dict[str, str], stats: dict[str, int],
                        maker: Executor) -> None:
    family = list(FAMILIES)[int(rng.integers(len(FAMILIES)))]
    key = f"load/{family}/{int(rng.integers(KEYS_PER_FAMILY))}"
    if key in last and rng.random() < 0.33:
        body = _edit(rng, last[key])
    else:
        size = int(np.exp(rng.uniform(np.log(16 << 10), np.log(8 << 20))))
        # Another process, not a thread: making up to 8 MiB in Python holds the GIL for hundreds of ms, and
        # the loop it starved sent request bodies that late, which the managers measured as their latency
        # (header-to-body gaps p50 300 ms, max 2.8 s in a quiet `dwcp up`; HighLatency fired on dwcp-manager).
        body = await asyncio.get_running_loop().run_in_executor(
            maker, make_object, family, int(rng.integers(1 << 62)), size)
    src = int(rng.integers(len(urls)))
    dst = (src + 1 + int(rng.integers(len(urls) - 1))) % len(urls) if len(urls) > 1 else src
    try:
        resp = await client.put(f"{urls[src]}/v1/objects/{key}", content=body)
        stats["ok" if resp.status_code < 400 else "error"] += 1
        if resp.status_code >= 400:
            return
        last[key] = body
        stored_at[key] = urls[src]
        if dst == src:
            return
        resp = await client.post(f"{urls[src]}/v1/transfers", json={"key": key, "to": f"manager-{dst}"})
        stats["ok" if resp.status_code < 400 else "error"] += 1
    except httpx.HTTPError as exc:
        stats["failed"] += 1
        if stats["failed"] % 50 == 1:
            log.warning("manager request to %s failed: %r", urls[src], exc)


async def routable(client: httpx.AsyncClient, url: str) -> list[str] | None:
    """The clusters a site can route to: those its /health does not report unavailable (None: no answer)."""
    try:
        checks = (await client.get(f"{url}/health")).json().get("checks", {})
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return [c for c in CLUSTERS if c in checks and not str(checks[c].get("detail", "")).startswith(ABSENT)]


async def _transaction_round(client: httpx.AsyncClient, urls: list[str], rng: np.random.Generator,
                             sent: list[tuple[str, str, str]], stats: dict[str, int],
                             clusters: dict[str, list[str]]) -> None:
    url = urls[int(rng.integers(len(urls)))]
    if sent and rng.random() < 0.05:
        key, payload, cluster = sent[int(rng.integers(len(sent)))]  # a client retrying: commits once
    else:
        key, payload = os.urandom(8).hex(), base64.b64encode(os.urandom(int(rng.integers(32, 512)))).decode()
        if url not in clusters and (found := await routable(client, url)) is not None:
            clusters[url] = found
        named = clusters.get(url)
        cluster = "auto" if rng.random() < 0.7 or not named else named[int(rng.integers(len(named)))]
    try:
        resp = await client.post(f"{url}/v1/transactions",
                                 json={"payload": payload, "cluster": cluster, "idempotency_key": key})
        stats["ok" if resp.status_code < 400 else "error"] += 1
        if resp.status_code == 202:
            sent.append((key, payload, cluster))
            del sent[:-256]
    except httpx.HTTPError:
        stats["failed"] += 1


async def _read_round(client: httpx.AsyncClient, urls: list[str], rng: np.random.Generator,
                      stored_at: dict[str, str], stats: dict[str, int]) -> None:
    url = urls[int(rng.integers(len(urls)))]
    try:
        if stored_at and rng.random() < 0.5:
            # HEAD where the object was stored: another site holds it only once a transfer finished, and a
            # read that 404s by design would show a healthy system failing on the Overview's Error Rate.
            key = list(stored_at)[int(rng.integers(len(stored_at)))]
            resp = await client.head(f"{stored_at[key]}/v1/objects/{key}")
            stats["ok" if resp.status_code == 200 else "error"] += 1
        else:
            resp = await client.get(f"{url}/v1/links")
            stats["ok" if resp.status_code < 400 else "error"] += 1
    except httpx.HTTPError:
        stats["failed"] += 1


async def drive(base_urls: list[str], client: httpx.AsyncClient, stop: asyncio.Event, rate: float) -> None:
    """Object rounds and reads at about `rate` requests per second in all, until `stop` is set."""
    if not base_urls or rate <= 0:
        await stop.wait()
        return
    rng = np.random.default_rng()
    stats = {"ok": 0, "error": 0, "failed": 0}
    last: dict[str, bytes] = {}
    stored_at: dict[str, str] = {}  # key -> the site its latest version was PUT to
    sent: list[tuple[str, str, str]] = []
    clusters: dict[str, list[str]] = {}  # site -> clusters it routes to (asked once per site)
    tasks: set[asyncio.Task] = set()
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    maker = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        while not stop.is_set():
            if len(tasks) < MAX_IN_FLIGHT:
                pick = rng.random()
                if pick < OBJECT_SHARE:
                    work = _object_round(client, base_urls, rng, last, stored_at, stats, maker)
                elif pick < OBJECT_SHARE + TRANSACTION_SHARE:
                    work = _transaction_round(client, base_urls, rng, sent, stats, clusters)
                else:
                    work = _read_round(client, base_urls, rng, stored_at, stats)
                task = asyncio.create_task(work)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            next_at += float(rng.exponential(1.0 / rate))
            delay = next_at - loop.time()
            if delay > 0:
                await sleep_unless_stopped(stop, delay)
            elif delay < -1.0:
                next_at = loop.time()
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        maker.shutdown(wait=False, cancel_futures=True)
    log.info("manager load stopped: %s", stats)
