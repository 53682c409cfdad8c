"""dwcp up's manager load profile against fake sites: its reads never 404 by design."""

import httpx
import numpy as np

from dwcp.manager.load import _object_round, _read_round

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
        for _ in range(20):
            await _object_round(client, SITES, rng, last, stored_at, stats)
        for _ in range(60):
            await _read_round(client, SITES, rng, stored_at, stats)
    assert len(heads) > 10 and all(code == 200 for _, code in heads)
    assert stats["error"] == 0 and stats["failed"] == 0
