"""Four nodes assembled by `build_node` from an inventory, in one event loop over loopback TCP.

The same code path as `dwcp serve` minus HTTP and processes: keys, committee, the real protocol core,
SQLite logs, catch-up. Quicker to debug than the process-level e2e test, and it checks what that one
cannot see: every node's SQLite log, block for block.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from dwcp.consensus.node.assemble import build_node, core_config
from dwcp.consensus.settings import ConsensusSettings
from dwcp.consensus.transport.driver import Driver, DuplicateTransaction
from dwcp.runtime.ports import free_ports
from dwcp.runtime.server import build_context
from tests.consensus.conftest import keyed_inventory

N = 4


def _contexts(tmp_path: Path, protocol: str) -> list:
    ports = free_ports(2 * N)
    inv = keyed_inventory({"services": {"tpbft": {
        "instances": [{"port": ports[i], "ports": {"consensus": ports[N + i]}} for i in range(N)],
        "settings": {"protocol": protocol, "sync_interval_ms": 100},
    }}}, "tpbft", tmp_path / "keys")
    return [build_context(inv, "tpbft", i, tmp_path) for i in range(N)]


async def _until(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def _commit(driver: Driver, count: int) -> dict[str, int]:
    ids = [driver.submit(os.urandom(24)) for _ in range(count)]
    heights = await asyncio.gather(*(driver.wait_committed(i, 20.0) for i in ids))
    assert None not in heights
    return dict(zip(ids, heights, strict=True))


async def _commit_batched(driver: Driver, count: int) -> dict[str, int]:
    """As a batched HTTP request submits: all in one step, then waited for together."""
    outcomes = driver.submit_many([os.urandom(24) for _ in range(count)])
    assert {(o.status, o.detail) for o in outcomes} == {("pending", "")}
    ids = [o.tx_id for o in outcomes]
    heights = await driver.wait_committed_many(ids, 20.0)
    assert None not in heights
    return dict(zip(ids, heights, strict=True))


def _log(driver: Driver) -> list[tuple[int, bytes]]:
    return [(b.height, b.digest) for b in driver.store.range(1, driver.store.last_height)]


def test_core_config_maps_settings_and_refuses_what_the_core_lacks() -> None:
    cfg = core_config("pbft", ConsensusSettings(batch_size=50, batch_timeout_ms=3, view_change_timeout_ms=800))
    assert (cfg.batch_size, cfg.batch_delay, cfg.request_timeout, cfg.view_change_timeout) == (50, 0.003, 0.8, 0.8)
    with pytest.raises(ValueError, match="group_size: the pbft protocol has no such setting"):
        core_config("pbft", ConsensusSettings(group_size=4))
    tpbft = core_config("tpbft", ConsensusSettings(group_size=5, max_inflight=2, epoch_length=16))
    assert (tpbft.group_size, tpbft.max_inflight, tpbft.epoch_length) == (5, 2, 16)
    assert core_config("tpbft", ConsensusSettings()).max_inflight == 1  # the node's default, not the core's 8
    assert core_config("tpbft", ConsensusSettings(max_inflight=None)).max_inflight == type(tpbft)().max_inflight


@pytest.mark.network
@pytest.mark.parametrize("protocol", ["pbft", "tpbft"])
async def test_commits_and_a_restarted_node_catches_up_from_its_log_and_peers(tmp_path: Path, protocol: str) -> None:
    ctxs = _contexts(tmp_path, protocol)
    nodes = [build_node(ctx) for ctx in ctxs]
    for node in nodes:
        await node.start()
    try:
        await _until(lambda: all(len(n.transport.connected) == N - 1 for n in nodes))
        acked = await _commit(nodes[1], 30)
        dup = nodes[1].submit(b"same payload, same id")
        with pytest.raises(DuplicateTransaction, match="pending"):
            nodes[1].submit(b"same payload, same id")
        assert await nodes[1].wait_committed(dup, 20.0) is not None
        with pytest.raises(DuplicateTransaction):  # committed, or still pending if node 2 lags
            nodes[2].submit(b"same payload, same id")

        await nodes[3].stop()  # node 3 leaves with its log on disk
        acked |= await _commit(nodes[0], 30)
        acked |= await _commit_batched(nodes[2], 40)  # a backup: one forward to the primary for the lot
        top = max(acked.values())
        # Same data dir: it replays its log, then fetches the rest from peers.
        nodes[3] = build_node(replace(ctxs[3], registry=CollectorRegistry()))
        await nodes[3].start()
        await _until(lambda: nodes[3].height >= top)
        acked |= await _commit(nodes[3], 10)
        top = max(acked.values())
        await _until(lambda: all(n.height >= top for n in nodes))

        logs = [_log(n)[:top] for n in nodes]
        assert all(log == logs[0] for log in logs)
        for tx, height in acked.items():
            assert all(n.store.tx_height(bytes.fromhex(tx)) == height for n in nodes)
    finally:
        for node in nodes:
            await node.stop()
