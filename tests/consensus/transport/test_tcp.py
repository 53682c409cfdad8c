"""The TCP transport on loopback: authenticated delivery, refusal of unknown keys and bad frames, reconnect."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from prometheus_client import CollectorRegistry

from dwcp.consensus.transport.framing import Channel, FrameDecoder, encode_frame
from dwcp.consensus.transport.handshake import Handshake
from dwcp.consensus.transport.metrics import TransportMetrics
from dwcp.consensus.transport.tcp import TcpTransport, TransportConfig

pytestmark = [pytest.mark.network, pytest.mark.timeout(30)]
DOMAIN = b"tpbft/tcp-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, n: int) -> None:
        self.keys = {i: Ed25519PrivateKey.generate() for i in range(n)}
        self.public = {i: k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for i, k in self.keys.items()}
        self.ports = {i: free_port() for i in range(n)}
        self.inbox: dict[int, asyncio.Queue] = {i: asyncio.Queue() for i in range(n)}
        self.registries = {i: CollectorRegistry() for i in range(n)}
        self.nodes = {i: self.make(i) for i in range(n)}

    def make(self, i: int) -> TcpTransport:
        cfg = TransportConfig(
            me=i, host="127.0.0.1", port=self.ports[i],
            peers={j: ("127.0.0.1", p) for j, p in self.ports.items() if j != i},
            public_keys=self.public, sign=self.keys[i].sign, domain=DOMAIN,
            backoff_initial=0.02, backoff_max=0.2,
        )
        return TcpTransport(
            cfg, lambda peer, ch, data: self.inbox[i].put_nowait((peer, ch, data)),
            TransportMetrics(self.registries[i], "tpbft"),
        )

    def sample(self, i: int, name: str, **labels: str) -> float:
        return self.registries[i].get_sample_value(name, {"protocol": "tpbft", **labels}) or 0.0

    async def wait_connected(self, timeout: float = 5.0) -> None:
        async def all_up() -> None:
            while any(len(t.connected) < len(self.nodes) - 1 for t in self.nodes.values()):
                await asyncio.sleep(0.01)
        await asyncio.wait_for(all_up(), timeout)


async def _get(q: asyncio.Queue, timeout: float = 5.0):
    return await asyncio.wait_for(q.get(), timeout)


async def test_three_nodes_exchange_frames_on_every_channel() -> None:
    c = Cluster(3)
    for t in c.nodes.values():
        await t.start()
    try:
        await c.wait_connected()
        assert c.sample(0, "dwcp_consensus_peers_connected") == 2
        c.nodes[0].send(1, Channel.CONSENSUS, b"vote")
        c.nodes[2].send(1, Channel.SYNC, b"sync-req")
        await c.nodes[1].send_wait(0, Channel.DATA, b"B" * 3_000_000)
        got = {await _get(c.inbox[1]), await _get(c.inbox[1])}
        assert got == {(0, Channel.CONSENSUS, b"vote"), (2, Channel.SYNC, b"sync-req")}
        assert await _get(c.inbox[0]) == (1, Channel.DATA, b"B" * 3_000_000)
        assert c.nodes[2].send_many([0, 1], Channel.CONSENSUS, b"to-both") == 2
        assert await _get(c.inbox[0]) == (2, Channel.CONSENSUS, b"to-both")
        assert await _get(c.inbox[1]) == (2, Channel.CONSENSUS, b"to-both")
    finally:
        for t in c.nodes.values():
            await t.stop()


async def _raw_handshake(port: int, me: int, key: Ed25519PrivateKey, public: dict[int, bytes]):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hs = Handshake(me=me, sign=key.sign, public_keys=public, domain=DOMAIN)
    writer.write(encode_frame(Channel.HANDSHAKE, hs.hello()))
    dec = FrameDecoder()
    while not hs.done:
        data = await asyncio.wait_for(reader.read(4096), 5)
        if not data:
            return reader, writer, hs
        for frame in dec.feed(data):
            for reply in hs.receive(frame.payload):
                writer.write(encode_frame(Channel.HANDSHAKE, reply))
    await writer.drain()
    return reader, writer, hs


async def test_unknown_key_is_refused_and_counted() -> None:
    c = Cluster(2)
    await c.nodes[0].start()
    try:
        stranger = Ed25519PrivateKey.generate()
        # Claims to be node 1 but signs with its own key; node 0 knows node 1's real key.
        reader, writer, hs = await _raw_handshake(c.ports[0], 1, stranger, c.public)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # node 0 closed on us
        writer.close()
        assert c.sample(0, "dwcp_consensus_frames_rejected_total", reason="handshake_bad_signature") == 1
        assert 1 not in c.nodes[0].inbound
        assert c.inbox[0].empty()
    finally:
        await c.nodes[0].stop()


async def test_oversize_and_unknown_channel_frames_close_only_that_link() -> None:
    c = Cluster(3)
    await c.nodes[0].start()
    try:
        for bad, reason in (
            (struct.pack("!IB", 50_000_000, Channel.CONSENSUS), "oversize"),
            (struct.pack("!IB", 1, 42) + b"x", "unknown_channel"),
        ):
            reader, writer, hs = await _raw_handshake(c.ports[0], 1, c.keys[1], c.public)
            assert hs.done
            writer.write(encode_frame(Channel.CONSENSUS, b"good") + bad)
            await writer.drain()
            assert await _get(c.inbox[0]) == (1, Channel.CONSENSUS, b"good")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            assert c.sample(0, "dwcp_consensus_frames_rejected_total", reason=reason) == 1
        # Node 0 still serves other peers.
        reader, writer, hs = await _raw_handshake(c.ports[0], 2, c.keys[2], c.public)
        writer.write(encode_frame(Channel.CONSENSUS, b"still here"))
        await writer.drain()
        assert await _get(c.inbox[0]) == (2, Channel.CONSENSUS, b"still here")
        writer.close()
    finally:
        await c.nodes[0].stop()


async def test_frames_sent_while_peer_is_down_arrive_after_it_restarts() -> None:
    c = Cluster(2)
    for t in c.nodes.values():
        await t.start()
    try:
        await c.wait_connected()
        await c.nodes[1].stop()
        c.nodes[0].send(1, Channel.CONSENSUS, b"while down")
        c.registries[1] = CollectorRegistry()
        c.nodes[1] = c.make(1)  # a new process would look the same to node 0
        await c.nodes[1].start()
        assert await _get(c.inbox[1]) == (0, Channel.CONSENSUS, b"while down")
        await c.wait_connected()
    finally:
        for t in c.nodes.values():
            await t.stop()


async def test_queue_to_an_unreachable_peer_stays_bounded() -> None:
    c = Cluster(2)
    await c.nodes[0].start()  # node 1 never starts
    try:
        for _ in range(20_000):
            c.nodes[0].send(1, Channel.CONSENSUS, b"x" * 1000)  # 20 MB offered into a 16 MiB bound
        q = c.nodes[0].queue(1)
        assert q.queued_bytes(Channel.CONSENSUS) <= 16 * 1024 * 1024
        dropped = c.sample(0, "dwcp_consensus_frames_dropped_total", channel="consensus")
        assert dropped == 20_000 - len(q) > 0
    finally:
        await c.nodes[0].stop()
