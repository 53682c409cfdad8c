"""A real 4-node cluster: `dwcp serve tpbft` processes over TCP on loopback, driven over HTTP.

Scenario: commit on every node; `kill -9` one node while transactions are in flight (including
to it) and keep committing with the other three (a quorum); restart it on its own log, watch it
catch up, and commit through it again. Then every node's log is compared height by height: one
digest per height everywhere, and every transaction a client was told is committed (by any node,
the killed one too) sits in exactly one block, at the height it was acknowledged with.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from dwcp.consensus.node.cluster import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.network, pytest.mark.slow]

N = 4


def _payload(tag: str, i: int) -> str:
    return base64.b64encode(f"{tag}-{i}-".encode() + os.urandom(8)).decode()


async def _submit_all(urls: list[str], tag: str, count: int, headers: dict[str, str]) -> dict[str, int]:
    """Submit `count` txs round-robin over `urls` with ?wait=true; tx id -> acknowledged height."""
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        async def one(i: int) -> tuple[str, int]:
            r = await client.post(f"{urls[i % len(urls)]}/v1/transactions?wait=true&timeout=20",
                                  json={"payload": _payload(tag, i)})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "committed"
            return body["id"], body["height"]

        return dict(await asyncio.gather(*(one(i) for i in range(count))))


async def _submit_while_killing(
    cluster: LocalCluster, role: str, tag: str, count: int
) -> tuple[dict, dict[str, int]]:
    """Submit to every node and, mid-stream, `kill -9` the current primary (or a backup). What the
    victim acknowledged before dying must survive like any other ack; its unanswered requests
    promise nothing. Returns (the status the victim was chosen from, acknowledged tx id -> height)."""
    urls = cluster.urls
    failed: set[int] = set()
    async with httpx.AsyncClient(timeout=30, headers=cluster.headers) as client:
        async def one(i: int) -> tuple[str, int] | None:
            await asyncio.sleep(i * 0.01)
            try:
                r = await client.post(f"{urls[i % N]}/v1/transactions?wait=true&timeout=20",
                                      json={"payload": _payload(tag, i)})
            except httpx.HTTPError:
                failed.add(i % N)
                return None
            assert r.status_code == 200, r.text
            return r.json()["id"], r.json()["height"]

        async def kill_soon() -> dict:
            await asyncio.sleep(count * 0.01 / 2)
            status = (await client.get(f"{urls[0]}/v1/status")).json()  # T-PBFT re-ranks per epoch: ask
            status["victim"] = status["primary"] if role == "primary" else (status["primary"] + 2) % N
            await asyncio.to_thread(cluster.kill, status["victim"])
            return status

        *results, at_kill = await asyncio.gather(*(one(i) for i in range(count)), kill_soon())
    assert failed <= {at_kill["victim"]}, f"requests to live nodes {failed - {at_kill['victim']}} failed"
    return at_kill, dict(r for r in results if r is not None)


def _status(client: httpx.Client, url: str) -> dict:
    return client.get(f"{url}/v1/status").json()


def _wait_height(client: httpx.Client, url: str, height: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _status(client, url)["height"] >= height:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not reach height {height} in {timeout}s: {_status(client, url)}")


def _check_logs(client: httpx.Client, urls: list[str], acked: dict[str, int]) -> int:
    """Identical digests at every height on every node; each acked tx in exactly one block, at its height."""
    top = min(_status(client, u)["height"] for u in urls)
    seen: Counter[str] = Counter()
    where: dict[str, int] = {}
    for h in range(1, top + 1):
        blocks = [client.get(f"{u}/v1/blocks/{h}").json() for u in urls]
        assert len({b["digest"] for b in blocks}) == 1, f"nodes disagree at height {h}"
        for tx in blocks[0]["transactions"]:
            seen[tx] += 1
            where[tx] = h
    for tx, height in acked.items():
        assert seen[tx] == 1, f"tx {tx} appears {seen[tx]} times"
        assert where[tx] == height, f"tx {tx} acknowledged at {height}, logged at {where[tx]}"
    return top


def _bad_input(client: httpx.Client, url: str, committed_id: str) -> None:
    def error(r: httpx.Response, status: int) -> dict:
        assert r.status_code == status, (r.status_code, r.text)
        return r.json()["error"]

    tx = f"{url}/v1/transactions"
    assert error(client.post(tx, content=b"x" * 5000, headers={"content-type": "application/octet-stream"}),
                 413)["code"] == "payload_too_large"
    assert error(client.post(tx, content=b"{nope", headers={"content-type": "application/json"}),
                 400)["code"] == "bad_request"
    unauthenticated = client.post(tx, json={"payload": "aGk="}, headers={"authorization": ""})
    assert error(unauthenticated, 401)["code"] == "unauthorized"
    assert error(client.post(tx, json={"payload": "%%%"}), 422)["field"] == "payload"
    assert error(client.post(tx, json={"payload": ""}), 422)["field"] == "payload"
    payload = _payload("dup", 0)
    assert client.post(tx, json={"payload": payload}).status_code == 202
    assert error(client.post(tx, json={"payload": payload}), 409)["code"] == "duplicate"
    assert error(client.get(f"{tx}/{'ab' * 16}"), 404)["code"] == "not_found"
    assert error(client.get(f"{tx}/not-an-id"), 422)["field"] == "tx_id"
    assert error(client.get(f"{url}/v1/blocks/999999"), 404)["code"] == "not_found"
    assert error(client.get(f"{url}/v1/blocks/abc"), 422)["code"] == "invalid_input"
    assert client.get(f"{tx}/{committed_id}").json()["status"] == "committed"


@pytest.mark.parametrize("role", ["backup", "primary"])
@pytest.mark.parametrize("protocol", ["tpbft", "pbft"])
def test_commits_survives_kill9_and_restarted_node_catches_up(tmp_path: Path, protocol: str, role: str) -> None:
    """Killing the primary also exercises a view change; small batches make T-PBFT cross epochs (32 blocks)."""
    settings = {"protocol": protocol, "max_tx_bytes": 1024, "sync_interval_ms": 200, "batch_size": 2,
                "view_change_timeout_ms": 500}
    with LocalCluster(tmp_path, N, settings=settings) as cluster, \
            httpx.Client(timeout=10, headers=cluster.headers) as client:
        cluster.start_all()
        cluster.wait_ready(timeout=60)
        urls = cluster.urls

        acked = asyncio.run(_submit_all(urls, "all-up", 40, cluster.headers))
        top = max(acked.values())
        for url in urls:  # committed on every node, at the acknowledged height
            _wait_height(client, url, top)
            some = next(iter(acked))
            assert client.get(f"{url}/v1/transactions/{some}").json() == {
                "id": some, "status": "committed", "height": acked[some]}

        at_kill, during = asyncio.run(_submit_while_killing(cluster, role, "kill", 40))
        victim = at_kill["victim"]
        assert len(during) >= 30  # every request to a survivor is acknowledged
        acked |= during
        survivors = [u for i, u in enumerate(urls) if i != victim]
        acked |= asyncio.run(_submit_all(survivors, "one-down", 40, cluster.headers))
        top = max(acked.values())

        cluster.start(victim)
        cluster.wait_ready([victim], timeout=60)
        _wait_height(client, urls[victim], top)  # caught up from its own log plus certified blocks
        acked |= asyncio.run(_submit_all(urls, "rejoined", 20, cluster.headers))
        for url in urls:
            _wait_height(client, url, max(acked.values()))

        assert len(acked) == 100 + len(during)
        assert _check_logs(client, urls, acked) >= 50  # batches of at most 2
        if role == "primary":  # replaced by a view change, or (T-PBFT) by the next epoch's ranking
            survivors_now = [_status(client, u) for i, u in enumerate(urls) if i != victim]
            assert max(st["view_changes"] for st in survivors_now) >= 1 or min(
                st["epoch"] for st in survivors_now) > at_kill["epoch"]
        if protocol == "tpbft":
            assert _status(client, urls[victim])["epoch"] >= 1  # the restarted node re-ranked like the others
        _bad_input(client, urls[victim], next(iter(acked)))
        health = client.get(f"{urls[victim]}/health").json()
        assert health["checks"]["consensus"]["status"] == "ok"
        metrics = client.get(f"{urls[0]}/metrics").text
        # each protocol exports its own names (the registry's metrics class): pbft_* for the baseline
        assert f"{protocol}_blocks_committed_total" in metrics
        assert f"{protocol}_consensus_latency_seconds_bucket" in metrics
        other = "pbft" if protocol == "tpbft" else "tpbft"
        assert f"\n{other}_blocks_committed_total" not in metrics
        assert ('tpbft_trust_score{node="3"}' in metrics) == (protocol == "tpbft")
