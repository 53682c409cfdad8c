"""The allocator's share of `dwcp up`'s load: allocations and releases at about `rate` requests per second.

Mix per request: ~70% allocations (trace-like demands), ~25% early releases of one of our allocations that
has not ended yet (a client knows when its allocation ends), ~5% reads of the cluster. Durations are sized from
each instance's CPU capacity so the cluster sits near 60% busy: enough pressure for occasional `no_capacity`
refusals without refusing everything. A healthy system answers nothing else with an error: bad input (422)
is what the service's tests send, not what its load is made of. HTTP errors are counted, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import httpx

from dwcp.runtime.waits import sleep_unless_stopped

log = logging.getLogger("dwcp.allocator.load")
_CORES = (1, 2, 4, 8, 16)
_CORE_P = (0.30, 0.28, 0.22, 0.14, 0.06)
_MEAN_CORES = sum(c * p for c, p in zip(_CORES, _CORE_P, strict=True))
TARGET_BUSY = 0.6


async def _cluster_cores(client: httpx.AsyncClient, url: str) -> float:
    try:
        r = await client.get(f"{url}/v1/cluster")
        if r.status_code == 200:
            return float(sum(h["capacity"]["cpu"] for h in r.json()["hosts"])) or 640.0
    except (httpx.HTTPError, ValueError, KeyError):
        pass
    return 640.0


def allocation_body(rng: random.Random, mean_duration: float) -> dict:
    cores = rng.choices(_CORES, _CORE_P)[0]
    return {
        "demand": {"cpu": cores, "mem": round(cores * rng.lognormvariate(1.386, 0.4), 1),
                   "net": round(rng.lognormvariate(5.7, 0.6), 0)},
        "duration_s": round(min(max(rng.expovariate(1.0 / mean_duration), 1.0), 20 * mean_duration), 1),
        "max_wait_s": rng.choice((0, 60, 300, 900)),
    }


def _unexpired(allocations: list[tuple[str, float]], margin_s: float = 1.0) -> list[tuple[str, float]]:
    """Drop (in place) our allocations that have ended or will within `margin_s`; returns the list."""
    now = time.time()
    allocations[:] = [(aid, end) for aid, end in allocations if end > now + margin_s]
    return allocations


async def drive(base_urls: list[str], client: httpx.AsyncClient, stop: asyncio.Event, rate: float) -> None:
    """Run until `stop` is set."""
    if not base_urls or rate <= 0:
        await stop.wait()
        return
    rng = random.Random(8400)
    mine: dict[str, list[tuple[str, float]]] = {u: [] for u in base_urls}  # (id, end on the service's clock)
    per_instance_alloc_rate = max(0.7 * rate / len(base_urls), 1e-3)
    mean_duration = {u: TARGET_BUSY * await _cluster_cores(client, u) / (_MEAN_CORES * per_instance_alloc_rate)
                     for u in base_urls}
    errors = 0
    n = 0
    while not stop.is_set():
        url = base_urls[n % len(base_urls)]
        n += 1
        roll = rng.random()
        try:
            live = _unexpired(mine[url])
            if roll < 0.70:
                r = await client.post(f"{url}/v1/allocations", json=allocation_body(rng, mean_duration[url]))
                if r.status_code == 201:
                    body = r.json()
                    live.append((body["id"], time.time() + body["end"] - body["start"]))
            elif roll < 0.95 and live:
                aid, _ = live.pop(rng.randrange(len(live)))
                await client.delete(f"{url}/v1/allocations/{aid}")
            else:
                await client.get(f"{url}/v1/cluster")
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            errors += 1
            if errors % 100 == 1:
                log.warning("allocator load: %s errors so far (last: %r)", errors, exc)
        await sleep_unless_stopped(stop, rng.expovariate(rate))
