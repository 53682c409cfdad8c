"""Transactions go to a cluster as POST /v1/batches: concurrent submissions share a request, failover and
per-transaction answers keep their meaning, and a batch refused whole still answers each submission."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx

from dwcp.consensus.core.messages import tx_id
from dwcp.manager.dependency import Unavailable
from dwcp.manager.submitter import Rejected

from .test_routing import dead_cluster


def nodes(site) -> list[str]:
    return [f"127.0.0.1:{inst.port}" for inst in site.site.ctx.inventory.spec("tpbft").instances]


def submit_all(site, handler, payloads: list[bytes], first_node: int = 0) -> list:
    """Every payload submitted at once through the site's router (on a loop of its own), the nodes answering
    through `handler`; each submission's answer, or the exception it raised."""
    router = site.site.router
    dep = router.clusters["tpbft"]
    dep._next = first_node

    async def run() -> list:
        router._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        try:
            return await asyncio.gather(*(router.submit(p, "tpbft", f"key-{i}", False) for i, p in enumerate(payloads)),
                                        return_exceptions=True)
        finally:
            await router._client.aclose()

    return asyncio.run(run())


def batch_answer(payloads: list[bytes], status: str = "pending", overrides: dict | None = None) -> httpx.Response:
    docs = [{"id": tx_id(p).hex(), "status": (overrides or {}).get(p, status), "height": None} for p in payloads]
    return httpx.Response(202, json={"accepted": len(docs), "transactions": docs})


def payloads_of(request: httpx.Request) -> list[bytes]:
    return [base64.b64decode(p) for p in json.loads(request.content)["payloads"]]


def test_concurrent_submissions_share_batch_requests(make_sites):
    site = make_sites(1, extra=dead_cluster(2))[0]
    seen: list[tuple[str, int]] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        sent = payloads_of(request)
        seen.append((request.url.path, len(sent)))
        await asyncio.sleep(0.05)  # a node's answer takes a while: submissions meanwhile queue for the next batch
        return batch_answer(sent)

    payloads = [b"tx-%d" % i for i in range(60)]
    results = submit_all(site, handle, payloads)
    assert [r["id"] for r in results] == [tx_id(p).hex() for p in payloads]
    assert all(path == "/v1/batches" for path, _ in seen)
    assert sum(n for _, n in seen) == 60 and len(seen) <= 8, seen  # before: 60 POST /v1/transactions
    again = submit_all(site, handle, payloads[:3])
    assert all(r["replayed"] for r in again) and sum(n for _, n in seen) == 60  # replayed from the records


def test_a_batch_fails_over_past_a_timed_out_node_and_duplicates_count_as_accepted(make_sites):
    """The first node took the batch but its answer never came; the next node already holds the gossiped
    transactions and says so: every submission is accepted, once, with no error."""
    site = make_sites(1, extra=dead_cluster(2))[0]
    first, second = nodes(site)
    posts: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        node = f"{request.url.host}:{request.url.port}"
        posts.append(node)
        if node == first:
            raise httpx.ReadTimeout("the node took the batch but its answer never came")
        return batch_answer(payloads_of(request), status="duplicate")

    payloads = [b"lost-answer-%d" % i for i in range(5)]
    results = submit_all(site, handle, payloads, first_node=0)
    assert all(isinstance(r, dict) and r["replayed"] is False for r in results), results
    assert posts == [first, second]  # one batch, failed over once
    assert site.metric("dwcp_circuit_breaker_state",
                       {"service": "dwcp-manager", "breaker": "tpbft", "state": "closed"}) == 1


def test_a_transaction_refused_by_a_full_pool_is_a_503_naming_the_cluster_and_the_rest_are_accepted(make_sites):
    site = make_sites(1, extra=dead_cluster(1))[0]
    payloads = [b"fits-1", b"does-not-fit", b"fits-2"]
    results = submit_all(site, lambda r: batch_answer(payloads_of(r), overrides={b"does-not-fit": "refused"}),
                         payloads)
    assert isinstance(results[1], Unavailable) and results[1].dependency == "tpbft"
    assert "pool full" in results[1].reason
    assert results[0]["id"] == tx_id(b"fits-1").hex() and results[2]["id"] == tx_id(b"fits-2").hex()
    assert site.site.router.log.idempotent("key-1") is None  # not recorded: a retry under the key submits again


def test_a_batch_refused_whole_is_resent_one_by_one_so_only_the_bad_transaction_fails(make_sites):
    site = make_sites(1, extra=dead_cluster(1))[0]
    singles: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/batches":
            return httpx.Response(413, json={"error": {"code": "too_large", "message": "payloads[1] too large",
                                                       "field": "payloads[1]"}})
        singles.append(request.content)
        if request.content == b"too-big":
            return httpx.Response(413, json={"error": {"code": "too_large", "message": "too large",
                                                       "field": "payload"}})
        if request.content == b"already-there":
            return httpx.Response(409, json={"error": {"code": "duplicate", "message": "pending", "field": "payload"}})
        return httpx.Response(202, json={"id": tx_id(request.content).hex(), "status": "pending"})

    payloads = [b"good", b"too-big", b"already-there"]
    results = submit_all(site, handle, payloads)
    assert sorted(singles) == sorted(payloads)
    assert results[0]["id"] == tx_id(b"good").hex() and results[2]["id"] == tx_id(b"already-there").hex()
    assert isinstance(results[1], Rejected) and results[1].status == 413
    assert results[1].body["error"]["field"] == "payload"
