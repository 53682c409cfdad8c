"""A peer's word about heights is never enough (issue 15, item 1): only certificates move a node.

One node built by `build_node` with fresh keys; its transport is not started, and what a peer would
send arrives through the driver's frame handler as from an authenticated (but Byzantine) member.
What the node sends back is read from its outbound queues.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from dwcp.consensus.core.codec import block_digest, encode, signing_bytes
from dwcp.consensus.core.crypto import Ed25519Signer
from dwcp.consensus.core.messages import Block, Certificate, Transaction, Vote
from dwcp.consensus.node.assemble import build_node
from dwcp.consensus.node.keys import load_keys
from dwcp.consensus.transport.driver import STALE_ROUNDS, STEADY_ROUNDS, Driver
from dwcp.consensus.transport.framing import Channel, FrameDecoder
from dwcp.consensus.transport.sync import SyncBlock, SyncBlocks, SyncRequest, SyncStatus, decode_sync, encode_sync
from dwcp.runtime.ports import free_ports
from dwcp.runtime.server import build_context
from tests.consensus.conftest import keyed_inventory

N = 4
REJECTED = "dwcp_consensus_frames_rejected_total"


@dataclass
class Node:
    driver: Driver
    key_dir: Path
    registry: CollectorRegistry

    def rejected(self, reason: str) -> float:
        return self.registry.get_sample_value(REJECTED, {"protocol": "tpbft", "reason": reason}) or 0.0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    ports = free_ports(2 * N)
    inv = keyed_inventory({"services": {"tpbft": {
        "instances": [{"port": ports[i], "ports": {"consensus": ports[N + i]}} for i in range(N)],
    }}}, "tpbft", tmp_path / "keys")
    ctx = build_context(inv, "tpbft", 0, tmp_path)
    driver = build_node(ctx)
    yield Node(driver, tmp_path / "keys", ctx.registry)
    driver.store.close()


def _signers(signers: dict[int, Ed25519Signer], height: int, block: Block) -> Certificate:
    """A commit certificate for `block` signed by every given signer (as a quorum's commit votes are)."""
    vote = Vote(kind="commit", epoch=0, view=0, height=height, digest=block_digest(block))
    payload = encode(vote)
    ids = tuple(sorted(signers))
    return Certificate(kind="commit", epoch=0, view=0, height=height, digest=vote.digest, signers=ids,
                       signatures=tuple(signers[i].sign(signing_bytes(i, payload)) for i in ids))


def _real_signers(key_dir: Path) -> dict[int, Ed25519Signer]:
    return {i: load_keys(key_dir, i).signer for i in range(N)}


def _sent_sync(driver: Driver) -> list[tuple[int, object]]:
    """Every SYNC message the node queued, drained from its outbound queues."""
    out = []
    for peer in driver.peers:
        for frame in FrameDecoder().feed(b"".join(driver.transport.queue(peer).take(1 << 30))):
            if frame.channel is Channel.SYNC:
                out.append((peer, decode_sync(frame.payload)))
    return out


def _status(driver: Driver, peer: int, height: int, block: bytes = b"", certificate: bytes = b"") -> None:
    msg = SyncStatus(height=height, block=block, certificate=certificate)
    driver._on_frame(peer, Channel.SYNC, encode_sync(msg))


async def _take_first_block(driver: Driver, block: Block, cert: Certificate) -> None:
    """Block 1 arrives by catch-up from peer 1; wait until it is durable (the driver's writer must be running)."""
    driver._on_frame(1, Channel.SYNC, encode_sync(SyncBlocks(blocks=[SyncBlock(1, encode(block), encode(cert))])))
    for _ in range(200):
        if driver.height == 1:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("block 1 not durable")


def test_forged_height_does_not_pin_the_node_in_catching_up_nor_start_a_sync(node: Node) -> None:
    driver = node.driver
    _status(driver, 1, 10**15)  # the attack on main: one bare claim (now ignored)
    block = Block(height=10**15, epoch=0, view=0, proposer=1)
    _status(driver, 2, 10**15, encode(block), b"\x93garbage")
    one_vote = _signers({3: load_keys(node.key_dir, 3).signer}, 10**15, block)
    _status(driver, 3, 10**15, encode(block), encode(one_vote))  # a real signature, but no quorum
    assert driver.status()["catching_up"] is False
    assert _sent_sync(driver) == []
    assert node.rejected("unproven_height") == 2


def test_certificate_signed_with_the_old_public_dev_keys_moves_nothing(node: Node) -> None:
    """On main every key was blake2b("dwcp-dev-key:dwcp-dev-insecure:tpbft:<i>"): anyone could sign a
    quorum for a forged block. Keys are random per deployment now, so such a certificate is worthless."""
    driver = node.driver
    dev = {i: Ed25519Signer(i, hashlib.blake2b(f"dwcp-dev-key:dwcp-dev-insecure:tpbft:{i}".encode(),
                                                 digest_size=32).digest()) for i in range(N)}
    forged = Block(height=1, epoch=0, view=0, proposer=0, txs=(Transaction(payload=b"pay the attacker"),))
    cert = _signers(dev, 1, forged)
    _status(driver, 1, 1, encode(forged), encode(cert))
    driver._on_frame(1, Channel.SYNC, encode_sync(SyncBlocks(blocks=[SyncBlock(1, encode(forged), encode(cert))])))
    assert driver.height == 0 and driver._next_height == 1
    assert node.rejected("unproven_height") == 1 and node.rejected("bad_certificate") == 1


def test_a_proven_height_with_withheld_blocks_costs_one_request_per_status_not_a_storm(node: Node) -> None:
    driver, key_dir = node.driver, node.key_dir
    real = Block(height=5, epoch=0, view=0, proposer=0)
    proof = encode(_signers(_real_signers(key_dir), 5, real))  # a Byzantine member replays a real certificate
    _status(driver, 1, 5, encode(real), proof)
    assert driver.status()["catching_up"] is True
    assert _sent_sync(driver) == [(1, SyncRequest(start=1, end=5))]
    for _ in range(50):  # it answers every request with nothing: on main each empty answer asked again at once
        driver._on_frame(1, Channel.SYNC, encode_sync(SyncBlocks(blocks=[])))
    assert _sent_sync(driver) == []
    assert driver.status()["catching_up"] is False  # forgotten until it proves a height again
    _status(driver, 1, 5, encode(real), proof)
    assert _sent_sync(driver) == [(1, SyncRequest(start=1, end=5))]


async def test_status_carries_the_proof_only_to_peers_that_said_they_are_behind(node: Node) -> None:
    driver, key_dir = node.driver, node.key_dir
    block = Block(height=1, epoch=0, view=0, proposer=0, txs=(Transaction(payload=b"tx"),))
    cert = _signers(_real_signers(key_dir), 1, block)
    driver.writer.start()
    try:
        await _take_first_block(driver, block, cert)
        _sent_sync(driver)  # drop what catch-up queued so far
        _status(driver, 2, 0)  # behind us
        _status(driver, 3, 1)  # level with us; peer 1 said nothing yet
        driver._send_status()
        proof = SyncStatus(height=1, block=encode(block), certificate=encode(cert))
        assert sorted(_sent_sync(driver)) == [(1, proof), (2, proof), (3, SyncStatus(height=1))]
    finally:
        await driver.writer.stop()


async def test_the_proof_goes_to_peers_that_were_behind_when_they_said_so(node: Node) -> None:
    # issue 12: under load every live peer's last status is a few blocks older than our height, and comparing
    # it with our height now sent the tip block and certificate to nearly every peer every sync interval.
    driver, key_dir = node.driver, node.key_dir
    signers = _real_signers(key_dir)
    blocks = [Block(height=h, epoch=0, view=0, proposer=0, txs=(Transaction(payload=b"tx%d" % h),)) for h in (1, 2)]
    certs = [_signers(signers, h, b) for h, b in zip((1, 2), blocks, strict=True)]
    now = [100.0]
    driver.clock = lambda: now[0]
    driver.writer.start()
    try:
        async def commit(i: int) -> None:
            driver._on_frame(1, Channel.SYNC, encode_sync(SyncBlocks(
                blocks=[SyncBlock(i + 1, encode(blocks[i]), encode(certs[i]))])))
            for _ in range(200):
                if driver.height == i + 1:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"block {i + 1} not durable")

        await commit(0)
        _status(driver, 1, 1)  # level with us when it said so
        _status(driver, 2, 0)  # behind us when it said so
        await commit(1)  # we move on; neither peer has spoken since
        _status(driver, 3, 1)  # behind us when it said so
        _sent_sync(driver)  # drop what catch-up queued so far
        driver._send_status()
        proof = SyncStatus(height=2, block=encode(blocks[1]), certificate=encode(certs[1]))
        assert sorted(_sent_sync(driver)) == [(1, SyncStatus(height=2)), (2, proof), (3, proof)]
        now[0] += STALE_ROUNDS * driver.config.sync_interval + 0.01  # peer 1 silent since: judged by its word now
        _status(driver, 2, 2)
        _status(driver, 3, 2)
        driver._send_status()
        assert sorted(_sent_sync(driver)) == [(1, proof), (2, SyncStatus(height=2)), (3, SyncStatus(height=2))]
    finally:
        await driver.writer.stop()


async def test_in_step_with_every_peer_the_status_goes_out_every_few_intervals_else_every_one(node: Node) -> None:
    """Statuses are for a node that lags: while every peer's last word was level with us (within a block), ours
    goes out every STEADY_ROUNDS-th interval only; a peer behind, ahead or silent brings back every interval."""
    driver, key_dir = node.driver, node.key_dir
    block = Block(height=1, epoch=0, view=0, proposer=0, txs=(Transaction(payload=b"tx"),))
    cert = _signers(_real_signers(key_dir), 1, block)
    now = [100.0]
    driver.clock = lambda: now[0]
    driver.writer.start()
    try:
        await _take_first_block(driver, block, cert)

        def rounds(count: int) -> list[int]:
            """Run `count` gossip rounds a sync interval apart; the rounds (1-based) in which a status went out."""
            out = []
            for i in range(1, count + 1):
                _sent_sync(driver)
                driver._gossip_round()
                if any(isinstance(m, SyncStatus) for _, m in _sent_sync(driver)):
                    out.append(i)
                now[0] += driver.config.sync_interval
            return out

        assert rounds(2) == [1, 2]  # no peer heard from yet
        for _ in range(2):  # the peers, in step too, speak as often
            for p in (1, 2, 3):
                _status(driver, p, 1)
            assert rounds(STEADY_ROUNDS) == [STEADY_ROUNDS]
        now[0] += driver.config.sync_interval + 0.01
        _status(driver, 2, 1)
        _status(driver, 3, 1)  # peer 1 spoke last STALE_ROUNDS intervals ago: stale
        assert rounds(2) == [1, 2]
        _status(driver, 1, 1)
        _status(driver, 2, 3)  # ahead of us by two: we are behind (a bare claim proves nothing, but we ask)
        assert rounds(2) == [1, 2]
        _status(driver, 1, 1)
        _status(driver, 2, 0)  # within a block of us
        _status(driver, 3, 1)
        assert rounds(STEADY_ROUNDS) == [STEADY_ROUNDS]
    finally:
        await driver.writer.stop()


def test_checkpoints_and_trust_reports_are_sent_deferred_and_votes_and_height_gossip_at_once(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    from dwcp.consensus.pbft.messages import Checkpoint
    from dwcp.consensus.tpbft.messages import TrustReport

    driver = node.driver
    calls: list[tuple[Channel, bool]] = []
    monkeypatch.setattr(driver.transport, "send_many",
                        lambda peers, channel, payload, defer=False: calls.append((channel, defer)) or len(list(peers)))
    everyone = tuple(range(N))
    driver._send_to(everyone, Checkpoint(height=8, state=b"s" * 32))
    driver._send_to(everyone, TrustReport(epoch=0, peers=(1,), sat=(1,), unsat=(0,)))
    driver._send_to(everyone, Vote(kind="prepare", epoch=0, view=0, height=9, digest=b"d" * 32))
    assert calls == [(Channel.CONSENSUS, True), (Channel.CONSENSUS, True), (Channel.CONSENSUS, False)]
    calls.clear()
    driver._send_status()  # at once: an idle node's gossip round must not cost a second wake-up 25 ms later
    assert calls == [(Channel.SYNC, False)]
