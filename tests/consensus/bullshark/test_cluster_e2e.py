"""A real 4-node Bullshark cluster on loopback: `dwcp serve bullshark` processes, each with its worker
process, clients streaming transactions to the workers.

Scenario: load on all four workers; `kill -9` node 3 (its primary and worker, the process group)
while its client streams; keep loading the other three (a quorum keeps committing); restart node 3
on its own data, watch it catch up, load all four again. Then, with the cluster stopped, every
node's log and batch store are read back: the same block digest at every height on every node,
and every transaction a worker acknowledged (before the kill too) executed exactly once on every
node, in the same order.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from dwcp.consensus.node.cluster import LocalCluster
from dwcp.consensus.node.txstream import TxStream, payloads
from dwcp.consensus.transport.batchstore import committed_transactions

pytestmark = [pytest.mark.e2e, pytest.mark.network, pytest.mark.slow]

N = 4
SETTINGS = {"batch_size": 20_000, "max_batch_delay_ms": 50.0}  # small batches: many per second at this load


def acknowledged(stream: TxStream) -> list[bytes]:
    """The payloads the worker acknowledged on this stream (the first `acknowledged` sent)."""
    stats = type(stream.stats)()
    data = payloads(0, stream.stats.acknowledged, stream.size, stream.tag, 0, 0, stats)
    view, out, pos = memoryview(data), [], 0
    while pos < len(view):
        n = int.from_bytes(view[pos:pos + 4], "big")
        out.append(bytes(view[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return out


def worker_port(cluster: LocalCluster, i: int) -> int:
    return cluster.extra_ports["worker"][i]


async def load(cluster: LocalCluster, nodes: list[int], rate: float, duration: float,
               kill: tuple[int, float] | None = None) -> list[TxStream]:
    streams = [TxStream("127.0.0.1", worker_port(cluster, i), size=128) for i in nodes]
    for s in streams:
        await s.connect()
    runs = [asyncio.ensure_future(s.run(rate, duration)) for s in streams]
    if kill is not None:
        await asyncio.sleep(kill[1])
        cluster.kill(kill[0])
    await asyncio.gather(*runs, return_exceptions=True)  # the killed node's stream fails: expected
    await asyncio.gather(*(s.wait_acknowledged(15.0) for s in streams))
    for s in streams:
        await s.close()
    return streams


def heights(cluster: LocalCluster) -> list[int]:
    with httpx.Client(timeout=3.0) as client:
        return [client.get(f"{url}/v1/status").json()["height"] for url in cluster.urls]


def test_kill_9_restart_catch_up_and_every_acknowledged_tx_once_everywhere(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, N, service="bullshark", settings=SETTINGS) as cluster:
        cluster.start_all()
        cluster.wait_ready(timeout=120)
        streams = asyncio.run(load(cluster, list(range(N)), rate=300, duration=6.0, kill=(3, 3.0)))
        assert all(s.stats.acknowledged > 0 for s in streams), [(s.stats.sent, s.stats.acknowledged) for s in streams]
        during = asyncio.run(load(cluster, [0, 1, 2], rate=300, duration=3.0))
        cluster.start(3)
        cluster.wait_ready(timeout=120)
        after = asyncio.run(load(cluster, list(range(N)), rate=300, duration=3.0))
        unacked = [(s.port, s.stats.sent, s.stats.acknowledged) for s in during + after
                   if s.stats.acknowledged != s.stats.sent]
        assert not unacked, f"(worker port, sent, acknowledged) short: {unacked}; logs in {tmp_path}"
        time.sleep(3.0)  # rounds go on without load: everything acknowledged commits meanwhile
        target = max(heights(cluster))
        deadline = time.monotonic() + 60
        while min(heights(cluster)) < target and time.monotonic() < deadline:
            time.sleep(0.5)
        assert min(heights(cluster)) >= target, f"the restarted node did not catch up: {heights(cluster)}"
        time.sleep(2.0)  # the restarted worker fetches the batches of heights it caught up on
    expected = [tx for s in streams + during + after for tx in acknowledged(s)]
    logs = [committed_transactions(tmp_path / "data" / f"bullshark-{i}", up_to=target) for i in range(N)]
    assert all(digests == logs[0][0] for digests, _ in logs), "nodes committed different blocks"
    for node, (_, txs) in enumerate(logs):
        counts = Counter(txs)
        assert not [tx for tx, c in counts.items() if c > 1], f"node {node} executed a transaction twice"
        missing = [tx for tx in expected if tx not in counts]
        assert not missing, f"node {node} lacks {len(missing)} of {len(expected)} acknowledged transactions"
        assert txs == logs[0][1]


def test_a_transaction_committed_over_http_is_still_known_and_refused_again_after_kill_9(tmp_path: Path) -> None:
    payload = base64.b64encode(b"submitted over http, once").decode()
    with LocalCluster(tmp_path, 1, service="bullshark") as cluster, httpx.Client(timeout=15.0) as client:
        cluster.start_all()
        cluster.wait_ready(timeout=120)
        sent = client.post(f"{cluster.url(0)}/v1/transactions", params={"wait": "true", "timeout": "10"},
                           json={"payload": payload}, headers=cluster.headers)
        assert sent.status_code == 200, sent.text
        tx, height = sent.json()["id"], sent.json()["height"]
        cluster.kill(0)
        cluster.start(0)
        cluster.wait_ready(timeout=120)
        found = client.get(f"{cluster.url(0)}/v1/transactions/{tx}")
        assert found.json() == {"id": tx, "status": "committed", "height": height}
        again = client.post(f"{cluster.url(0)}/v1/transactions", json={"payload": payload}, headers=cluster.headers)
        assert again.status_code == 409, again.text
        assert "is already committed" in again.text, again.text


def test_transactions_acknowledged_just_before_a_sigterm_commit_and_are_known_after_the_restart(
        tmp_path: Path) -> None:
    """A stop never acknowledges and drops: the node drains (refusing new submissions) before it exits."""
    payloads_ = [base64.b64encode(f"taken right before the stop {i}".encode()).decode() for i in range(20)]
    with LocalCluster(tmp_path, 1, service="bullshark") as cluster, httpx.Client(timeout=15.0) as client:
        cluster.start_all()
        cluster.wait_ready(timeout=120)
        ids = []
        for payload in payloads_:
            sent = client.post(f"{cluster.url(0)}/v1/transactions", json={"payload": payload},
                               headers=cluster.headers)
            assert sent.status_code == 202, sent.text
            ids.append(sent.json()["id"])
        # At once: the last ones are still in their batch or on their way. (uvicorn re-raises the SIGTERM
        # it handled once its shutdown is done: that exit is the signal's.)
        assert cluster.stop(0) == -signal.SIGTERM
        cluster.start(0)
        cluster.wait_ready(timeout=120)
        found = [client.get(f"{cluster.url(0)}/v1/transactions/{tx}") for tx in ids]
        assert [(r.status_code, r.json().get("status")) for r in found] == [(200, "committed")] * len(ids), \
            f"logs in {tmp_path}"
        again = client.post(f"{cluster.url(0)}/v1/transactions", json={"payload": payloads_[-1]},
                            headers=cluster.headers)
        assert again.status_code == 409, again.text
