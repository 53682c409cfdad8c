"""compression-api's share of `dwcp up` load: a realistic mix of payloads, links and request forms.

Payloads come from the corpus families at many sizes; links span 1 Mbit/s-10 Gbit/s and 0.1-300 ms.
About 70% of calls are single JSON predictions, 20% octet-stream, 10% batches of 2-32 items; a fifth of the
items name a chunk (`chunk_bytes`, 64 KiB-4 MiB, at most the payload) instead of taking the 1 MiB default.
HTTP failures are counted and logged, never raised: load keeps going while instances restart.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging

import httpx
import numpy as np

from dwcp.compression.api import check_item
from dwcp.compression.corpus import FAMILIES
from dwcp.compression.features import make_sample
from dwcp.compression.selector import Request
from dwcp.runtime.waits import sleep_unless_stopped

log = logging.getLogger("dwcp.load.compression")
MAX_IN_FLIGHT = 64


def payload_pool(seed: int, count: int = 48) -> list[tuple[bytes, int]]:
    """(client sample, payload size) pairs, made once: generating payloads per request would cost more. Sample i
    is of the family `FAMILIES` names i-th (cycling: `pool_family`)."""
    rng = np.random.default_rng(seed)
    names, out = list(FAMILIES), []
    for i in range(count):
        size = int(np.exp(rng.uniform(np.log(512), np.log(256 * 1024))))
        payload = FAMILIES[names[i % len(names)]](rng, size)
        # Some samples stand for much larger transfers (a 64 KiB sample of a 1 GiB file).
        scale = 1 if rng.random() < 0.6 else int(rng.integers(2, 4096))
        out.append((make_sample(payload), size * scale))
    return out


def pool_family(i: int) -> str:
    """The corpus family of `payload_pool`'s i-th sample."""
    return list(FAMILIES)[i % len(FAMILIES)]


def items(seed: int, count: int) -> list[tuple[int, Request]]:
    """`count` prediction items of the mix (single, raw and batch items alike), each with its pool index: a sample
    of `payload_pool(seed)`, a link and sometimes a chunk, as `drive` sends them. What the shadow evaluator is
    offered, for tools that score the live gauge's question offline (benchmarks/compression_live.py)."""
    samples = payload_pool(seed)
    rng = np.random.default_rng([seed, 1])
    out = []
    for _ in range(count):
        i = int(rng.integers(len(samples)))
        sample, size = samples[i]
        fields = {"size_bytes": size, **_link(rng), **_chunk(rng, size)}
        out.append((i, check_item(sample, fields, max_sample=len(sample))))  # parsed as the service parses a body
    return out


def _link(rng: np.random.Generator) -> dict[str, float]:
    link = {"bandwidth_mbps": round(float(np.exp(rng.uniform(0, np.log(10_000)))), 3),
            "rtt_ms": round(float(np.exp(rng.uniform(np.log(0.1), np.log(300)))), 3)}
    if rng.random() < 0.3:
        link["loss_rate"] = float(np.exp(rng.uniform(np.log(1e-6), np.log(1e-2))))
    return link


def _chunk(rng: np.random.Generator, size: int) -> dict[str, int]:
    if rng.random() >= 0.2:
        return {}
    return {"chunk_bytes": min(size, 1 << int(rng.integers(16, 23)))}


async def _send(client: httpx.AsyncClient, url: str, rng: np.random.Generator, pool: list[tuple[bytes, int]],
                b64: list[str], stats: dict[str, int]) -> None:
    kind = rng.random()
    try:
        if kind < 0.7:
            i = int(rng.integers(len(pool)))
            body = {"sample": b64[i], "size_bytes": pool[i][1], **_link(rng), **_chunk(rng, pool[i][1])}
            resp = await client.post(f"{url}/v1/predict", json=body)
        elif kind < 0.9:
            i = int(rng.integers(len(pool)))
            params = {"size_bytes": pool[i][1], **_link(rng), **_chunk(rng, pool[i][1])}
            resp = await client.post(f"{url}/v1/predict/raw", content=pool[i][0], params=params,
                                     headers={"content-type": "application/octet-stream"})
        else:
            picks = rng.integers(len(pool), size=int(rng.integers(2, 33)))
            items = [{"sample": b64[i], "size_bytes": pool[i][1], **_link(rng), **_chunk(rng, pool[i][1])}
                     for i in picks]
            resp = await client.post(f"{url}/v1/predict/batch", json={"items": items})
        stats["ok" if resp.status_code < 400 else "error"] += 1
    except httpx.HTTPError as exc:
        stats["failed"] += 1
        if stats["failed"] % 100 == 1:
            log.warning("compression-api request to %s failed: %r", url, exc)


async def drive(base_urls: list[str], client: httpx.AsyncClient, stop: asyncio.Event, rate: float) -> None:
    """Send the mix at about `rate` requests per second, round-robin over instances, until `stop` is set."""
    if not base_urls or rate <= 0:
        await stop.wait()
        return
    pool = await asyncio.to_thread(payload_pool, 7)
    b64 = [base64.b64encode(s).decode() for s, _ in pool]
    rng = np.random.default_rng()
    stats = {"ok": 0, "error": 0, "failed": 0}
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: set[asyncio.Task] = set()
    urls = itertools.cycle(base_urls)
    loop = asyncio.get_running_loop()
    next_at = loop.time()

    async def one(url: str) -> None:
        async with gate:
            await _send(client, url, rng, pool, b64, stats)

    while not stop.is_set():
        if len(tasks) < MAX_IN_FLIGHT * 2:  # a stalled server must not grow the task set without bound
            task = asyncio.create_task(one(next(urls)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        next_at += float(rng.exponential(1.0 / rate))  # Poisson arrivals, as from many independent clients
        delay = next_at - loop.time()
        if delay > 0:
            await sleep_unless_stopped(stop, delay)
        elif delay < -1.0:
            next_at = loop.time()  # fell behind by a second: do not burst to catch up
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    log.info("compression load stopped: %s", stats)
