"""dwcp up's manager load profile against fake sites: its reads never 404 by design."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import httpx
import numpy as np

from dwcp.manager.load import _object_round, _read_round, make_object

SITES = ["http://site-0", "http://site-1", "http://site-2"]


def fake_sites() -> tuple[httpx.AsyncClient, list[tuple[str, int]]]:
    stored: set[tuple[str, str]] = set()
    heads: list[tuple[str, int]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        site, path = f"{request.url.scheme}://{request.url.host}", request.url.path
        if request.method == "PUT":
            stored.add((site, path))
            return httpx.Response(200, json={"key": path})
        if request.method == "POST" and path == "/v1/transfers":
            return httpx.Response(202, json={"id": "0" * 32})  # accepted; it lands at the peer later
        if request.method == "HEAD":
            code = 200 if (site, path) in stored else 404
            heads.append((site, code))
            return httpx.Response(code)
        return httpx.Response(200, json={})

    return httpx.AsyncClient(transport=httpx.MockTransport(handle)), heads


async def test_object_reads_go_to_the_site_that_holds_the_object(monkeypatch) -> None:
    # Small objects keep the test fast; the families and the transfer choice are the profile's own.
    monkeypatch.setattr(np, "exp", lambda x: 4096.0)
    client, heads = fake_sites()
    rng, last, stored_at, stats = np.random.default_rng(7), {}, {}, {"ok": 0, "error": 0, "failed": 0}
    async with client:
        with ThreadPoolExecutor(1) as maker:
            for _ in range(20):
                await _object_round(client, SITES, rng, last, stored_at, stats, maker)
        for _ in range(60):
            await _read_round(client, SITES, rng, stored_at, stats)
    assert len(heads) > 10 and all(code == 200 for _, code in heads)
    assert stats["error"] == 0 and stats["failed"] == 0


async def test_transactions_name_every_cluster_the_site_routes_to_and_never_an_absent_one() -> None:
    from collections import Counter

    from dwcp.manager.load import _transaction_round

    named: Counter[str] = Counter()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":  # this site runs T-PBFT and Bullshark; ProBFT is not deployed
            return httpx.Response(200, json={"status": "ok", "checks": {
                "tpbft": {"status": "ok", "detail": "breaker closed"},
                "bullshark": {"status": "degraded", "detail": "breaker half_open"},
                "probft": {"status": "ok", "detail": "unavailable: probft is not in this deployment's inventory"}}})
        cluster = httpx.Response(200, content=request.content).json()["cluster"]
        named[cluster] += 1
        return httpx.Response(503 if cluster == "probft" else 202, json={"id": "0" * 32})

    rng, sent, stats = np.random.default_rng(3), [], {"ok": 0, "error": 0, "failed": 0}
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        clusters: dict[str, list[str]] = {}
        for _ in range(300):
            await _transaction_round(client, SITES[:1], rng, sent, stats, clusters)
    assert named["bullshark"] > 20 and named["tpbft"] > 20 and named["auto"] > 150, named
    assert named["probft"] == 0 and stats["error"] == 0, (named, stats)


class RecordingMaker(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(1)
        self.calls: list[tuple] = []

    def submit(self, fn, /, *args, **kwargs):
        self.calls.append((fn, *args))
        return super().submit(fn, *args, **kwargs)


async def test_object_bodies_are_made_by_the_maker_not_on_the_loop_that_sends_them(monkeypatch) -> None:
    # Making up to 8 MiB in Python on the sending process held the GIL, so request bodies left hundreds of ms
    # after their headers and the managers measured the gap as their own latency; `drive` passes a process.
    monkeypatch.setattr(np, "exp", lambda x: 4096.0)
    client, _ = fake_sites()
    rng, last, stored_at, stats = np.random.default_rng(5), {}, {}, {"ok": 0, "error": 0, "failed": 0}
    maker = RecordingMaker()
    async with client:
        for _ in range(12):
            await _object_round(client, SITES, rng, last, stored_at, stats, maker)
    maker.shutdown()
    assert maker.calls and all(call[0] is make_object and call[3] == 4096 for call in maker.calls)
    assert stats["error"] == 0 and stats["failed"] == 0


def test_a_spawned_maker_process_makes_the_same_body_as_the_generator_would() -> None:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as maker:
        assert maker.submit(make_object, "vm", 11, 200_000).result(timeout=60) == make_object("vm", 11, 200_000)
