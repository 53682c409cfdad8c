"""A node fsyncs at once only the blocks that hold transactions submitted to it; the others become durable
with its next synced write or within `max_unsynced_ms`, and until then nothing it answers names them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dwcp.consensus.node.assemble import build_node
from dwcp.consensus.transport.driver import Driver
from dwcp.runtime.ports import free_ports
from dwcp.runtime.server import build_context
from tests.consensus.conftest import keyed_inventory
from tests.consensus.node.test_driver_loopback import _until

N = 4


def _nodes(tmp_path: Path, max_unsynced_ms: float) -> list[Driver]:
    ports = free_ports(2 * N)
    inv = keyed_inventory({"services": {"tpbft": {
        "instances": [{"port": ports[i], "ports": {"consensus": ports[N + i]}} for i in range(N)],
        "settings": {"protocol": "pbft", "sync_interval_ms": 100, "max_unsynced_ms": max_unsynced_ms},
    }}}, "tpbft", tmp_path / "keys")
    return [build_node(build_context(inv, "tpbft", i, tmp_path)) for i in range(N)]


async def _commit(driver: Driver, count: int) -> list[tuple[str, int]]:
    ids = [o.tx_id for o in driver.submit_many([os.urandom(24) for _ in range(count)])]
    heights = await driver.wait_committed_many(ids, 20.0)
    assert None not in heights
    return list(zip(ids, heights, strict=True))


@pytest.mark.network
async def test_a_node_answers_only_from_its_durable_prefix(tmp_path: Path) -> None:
    nodes = _nodes(tmp_path, max_unsynced_ms=60_000)  # longer than the test: only a node's own txs sync it
    for node in nodes:
        await node.start()
    try:
        await _until(lambda: all(len(n.transport.connected) == N - 1 for n in nodes))
        a, b = nodes[1], nodes[2]
        (tx, height), *_ = await _commit(a, 10)
        assert a.tx_status(tx) == ("committed", height) and a.block(height) is not None
        await _until(lambda: b.height >= height)  # in b's log, but b fsynced none of it
        assert b.store.synced_height < height and b.writer.fsyncs == 0
        assert b.tx_status(tx) == ("pending", None)
        assert b.block(height) is None
        assert await b.wait_committed_many([tx], 0.05) == [None]
        assert b.status()["durable_height"] == b.store.synced_height

        (own, own_height), *_ = await _commit(b, 1)  # b's own tx: that write is fsynced, and the log before it
        assert b.store.synced_height >= own_height > height and b.writer.fsyncs >= 1
        assert b.tx_status(tx) == ("committed", height) and b.block(height) is not None
        assert b.tx_status(own) == ("committed", own_height)
    finally:
        for node in nodes:
            await node.stop()
    for i, node in enumerate(nodes):  # a stop makes the whole log durable
        assert node.store.synced_height == node.store.last_height, i


@pytest.mark.network
async def test_the_deadline_makes_a_quiet_nodes_log_durable(tmp_path: Path) -> None:
    nodes = _nodes(tmp_path, max_unsynced_ms=100)
    for node in nodes:
        await node.start()
    try:
        await _until(lambda: all(len(n.transport.connected) == N - 1 for n in nodes))
        (tx, height), *_ = await _commit(nodes[1], 5)
        quiet = nodes[3]
        await _until(lambda: quiet.store.synced_height >= height, timeout=5.0)
        assert quiet.tx_status(tx) == ("committed", height)
    finally:
        for node in nodes:
            await node.stop()
