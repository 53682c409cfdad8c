"""The TCP transport on loopback: authenticated delivery, refusal of unknown keys and bad frames, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct

import pytest
from prometheus_client import CollectorRegistry

from dwcp.consensus.core.crypto import generate_private_key
from dwcp.consensus.transport.framing import Channel, encode_frame
from dwcp.consensus.transport.metrics import TransportMetrics
from dwcp.consensus.transport.sync import SyncStatus, encode_sync
from dwcp.consensus.transport.tcp import TcpTransport, TransportConfig
from dwcp.runtime.peerauth import PeerAuth, PeerAuthError, connect, self_signed_certificate
from dwcp.runtime.ports import free_port

pytestmark = [pytest.mark.network, pytest.mark.timeout(30)]
LABEL = "tpbft/tcp-test"
REJECTED = "dwcp_consensus_frames_rejected_total"


class Cluster:
    def __init__(self, n: int) -> None:
        self.keys = {i: generate_private_key() for i in range(n)}
        self.certs = {i: self_signed_certificate(k, f"node-{i}") for i, k in self.keys.items()}
        self.ports = {i: free_port() for i in range(n)}
        self.inbox: dict[int, asyncio.Queue] = {i: asyncio.Queue() for i in range(n)}
        self.registries = {i: CollectorRegistry() for i in range(n)}
        self.nodes = {i: self.make(i) for i in range(n)}

    def auth(self, i: int, key: bytes | None = None, cert: bytes | None = None, label: str = LABEL) -> PeerAuth:
        """Node i's identity; a stranger passes its own key and certificate."""
        return PeerAuth(me=i, private_key=key or self.keys[i], certificate=cert or self.certs[i], peers=self.certs,
                        label=label)

    def make(self, i: int, peer_ports: dict[int, int] | None = None) -> TcpTransport:
        cfg = TransportConfig(
            me=i, host="127.0.0.1", port=self.ports[i],
            peers={j: ("127.0.0.1", p) for j, p in (peer_ports or self.ports).items() if j != i},
            auth=self.auth(i), backoff_initial=0.02, backoff_max=0.2,
        )
        return TcpTransport(
            cfg, lambda peer, ch, data: self.inbox[i].put_nowait((peer, ch, data)),
            TransportMetrics(self.registries[i], "tpbft"),
        )

    def sample(self, i: int, name: str, **labels: str) -> float:
        return self.registries[i].get_sample_value(name, {"protocol": "tpbft", **labels}) or 0.0

    @contextlib.asynccontextmanager
    async def running(self):
        """Every node started and connected to every other; all stopped after."""
        for t in self.nodes.values():
            await t.start()
        try:
            await self.wait_connected()
            yield self
        finally:
            for t in self.nodes.values():
                await t.stop()

    async def wait_connected(self, timeout: float = 5.0) -> None:
        async def all_up() -> None:
            while any(len(t.connected) < len(self.nodes) - 1 for t in self.nodes.values()):
                await asyncio.sleep(0.01)
        await asyncio.wait_for(all_up(), timeout)


async def _until(predicate, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


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


async def _dial(c: Cluster, port: int, auth: PeerAuth, expect: int = 0):
    return await connect(auth, "127.0.0.1", port, expect=expect, timeout=5)


async def _refused(c: Cluster, auth: PeerAuth) -> None:
    """Dial node 0 as `auth`: either the handshake fails, or node 0 closes at once without a byte."""
    try:
        reader, writer = await _dial(c, c.ports[0], auth)
    except (ssl.SSLError, OSError, PeerAuthError):
        return
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    except (ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


async def test_unknown_peer_is_refused_and_counted() -> None:
    c = Cluster(2)
    await c.nodes[0].start()
    try:
        stranger = generate_private_key()
        # Its own key and certificate (named like node 1): not pinned, so TLS verification fails.
        await _refused(c, c.auth(1, stranger, self_signed_certificate(stranger, "node-1")))
        await _until(lambda: c.sample(0, "dwcp_consensus_frames_rejected_total", reason="handshake_failed") == 1)
        # A member of another deployment (same keys, other committee or protocol) is refused too.
        await _refused(c, c.auth(1, label="tpbft/another-committee"))
        await _until(lambda: c.sample(0, REJECTED, reason="handshake_wrong_deployment") == 1)
        assert 1 not in c.nodes[0].inbound
        assert c.inbox[0].empty()
    finally:
        await c.nodes[0].stop()


async def test_dialler_refuses_a_pinned_node_answering_for_another() -> None:
    c = Cluster(3)
    await c.nodes[2].start()
    try:
        with pytest.raises(Exception, match="dialled node 1"):
            await connect(c.auth(0), "127.0.0.1", c.ports[2], expect=1, timeout=5)  # node 2 answers, not 1
    finally:
        await c.nodes[2].stop()


async def test_relay_without_keys_between_two_nodes_can_only_drop_or_delay() -> None:
    """The relay attack on the old handshake: X dials Y through an attacker who holds no key.

    The attacker relays the handshake both ways, then injects a forged SyncStatus into the link.
    X must end up talking to the real Y (never to the attacker), and nothing the attacker wrote
    may reach Y: the injected bytes fail TLS's record check and the link is torn down instead.
    """
    c = Cluster(2)
    relay_port = free_port()
    injected = asyncio.Event()

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def relay(x_reader: asyncio.StreamReader, x_writer: asyncio.StreamWriter) -> None:
        y_reader, y_writer = await asyncio.open_connection("127.0.0.1", c.ports[1])
        up = asyncio.ensure_future(pipe(x_reader, y_writer))
        down = asyncio.ensure_future(pipe(y_reader, x_writer))
        await asyncio.sleep(0.5)  # the handshake is through by now
        if not injected.is_set():
            injected.set()
            y_writer.write(encode_frame(Channel.SYNC, encode_sync(SyncStatus(height=10**15))))
        await asyncio.gather(up, down, return_exceptions=True)

    attacker = await asyncio.start_server(relay, "127.0.0.1", relay_port)
    c.registries[0] = CollectorRegistry()
    c.nodes[0] = c.make(0, peer_ports={1: relay_port})  # X reaches Y only through the attacker
    for t in c.nodes.values():
        await t.start()
    try:
        c.nodes[0].send(1, Channel.CONSENSUS, b"from X")
        assert await _get(c.inbox[1]) == (0, Channel.CONSENSUS, b"from X")  # the real Y, authenticated as X
        await asyncio.wait_for(injected.wait(), 5)
        await asyncio.sleep(0.5)
        c.nodes[0].send(1, Channel.CONSENSUS, b"after the injection")
        assert await _get(c.inbox[1]) == (0, Channel.CONSENSUS, b"after the injection")  # X redialled
        while not c.inbox[1].empty():
            assert c.inbox[1].get_nowait()[1] is not Channel.SYNC
        # Dialling Y directly, the attacker has no key to offer as X (or as anyone Y pins).
        stranger = generate_private_key()
        with pytest.raises((ssl.SSLError, OSError, asyncio.IncompleteReadError, AssertionError)):
            reader, writer = await _dial(c, c.ports[1], c.auth(0, stranger, self_signed_certificate(stranger, "x")),
                                         expect=1)
            assert await asyncio.wait_for(reader.read(), 5) != b""
        assert 0 in c.nodes[1].inbound and 1 in c.nodes[0].connected
    finally:
        attacker.close()
        for t in c.nodes.values():
            await t.stop()


async def test_oversize_and_unknown_channel_frames_close_only_that_link() -> None:
    c = Cluster(3)
    await c.nodes[0].start()
    try:
        for bad, reason in (
            (struct.pack("!IB", 50_000_000, Channel.CONSENSUS), "oversize"),
            (struct.pack("!IB", 1, 42) + b"x", "unknown_channel"),
        ):
            reader, writer = await _dial(c, c.ports[0], c.auth(1))
            writer.write(encode_frame(Channel.CONSENSUS, b"good") + bad)
            await writer.drain()
            assert await _get(c.inbox[0]) == (1, Channel.CONSENSUS, b"good")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            assert c.sample(0, "dwcp_consensus_frames_rejected_total", reason=reason) == 1
        # Node 0 still serves other peers.
        reader, writer = await _dial(c, c.ports[0], c.auth(2))
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


class _CountingWrites:
    """A link's asyncio transport, with its `write` calls recorded (everything else passes through)."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        self._inner.write(data)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


async def test_frames_queued_in_one_step_leave_as_one_write_in_order() -> None:
    async with Cluster(2).running() as c:
        link = c.nodes[0]._links[1]
        link.transport = counting = _CountingWrites(link.transport)
        frames = [(Channel.SYNC if i % 7 == 0 else Channel.CONSENSUS, b"m%03d" % i) for i in range(50)]
        for channel, payload in frames:  # one event-loop step: no await in between
            c.nodes[0].send(1, channel, payload)
        got = [await _get(c.inbox[1]) for _ in frames]
        assert counting.writes == [sum(len(encode_frame(ch, p)) for ch, p in frames)]
        # Priority within the step (consensus before sync), FIFO within each channel.
        want = [f for f in frames if f[0] is Channel.CONSENSUS] + [f for f in frames if f[0] is Channel.SYNC]
        assert [(ch, p) for _, ch, p in got] == want
        c.nodes[0].send(1, Channel.CONSENSUS, b"next step")
        assert await _get(c.inbox[1]) == (0, Channel.CONSENSUS, b"next step")
        assert len(counting.writes) == 2


async def test_a_peer_that_stops_reading_parks_frames_in_the_bounded_queue_then_gets_all_in_order() -> None:
    async with Cluster(2).running() as c:
        await _until(lambda: 0 in c.nodes[1].inbound)
        c.nodes[1]._inbound[0].transport.pause_reading()  # node 1 stops reading node 0's link
        link = c.nodes[0]._links[1]
        queue = c.nodes[0].queue(1)
        payload = b"v" * 60_000
        sent = 0
        while not len(queue):  # until the socket buffers are full and frames stay queued here
            assert sent < 2_000, "the link never pushed back"
            c.nodes[0].send(1, Channel.CONSENSUS, payload + sent.to_bytes(4, "big"))
            sent += 1
            await asyncio.sleep(0)
        for _ in range(20):  # more frames keep queueing (bounded), nothing is dropped below the bound
            assert c.nodes[0].send(1, Channel.CONSENSUS, payload + sent.to_bytes(4, "big"))
            sent += 1
        await asyncio.sleep(0.05)
        assert link.blocked.is_set() and len(queue) >= 20
        assert link.transport.get_write_buffer_size() >= link.high_water
        c.nodes[1]._inbound[0].transport.resume_reading()
        got = [await _get(c.inbox[1], timeout=10) for _ in range(sent)]
        assert [int.from_bytes(p[-4:], "big") for _, _, p in got] == list(range(sent))
        assert len(queue) == 0 and c.sample(0, "dwcp_consensus_frames_dropped_total", channel="consensus") == 0


class _ClosedTransport:
    """What an inbound link looks like when the peer hung up before the hand-over: closed, and its
    protocol will hear nothing more (connection_lost went to the StreamReader)."""

    def __init__(self) -> None:
        self.protocol = None
        self.aborted = False

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return True

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True


async def test_a_peer_that_sent_and_hung_up_before_the_hand_over_is_delivered_and_forgotten() -> None:
    c = Cluster(2)
    reader = asyncio.StreamReader()
    reader.feed_data(encode_frame(Channel.CONSENSUS, b"last words"))
    reader.feed_eof()
    transport = _ClosedTransport()
    writer = type("Writer", (), {"transport": transport})()
    task = asyncio.ensure_future(c.nodes[0]._accept(1, reader, writer))
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done, "the link's task waits for a receiver that will hear nothing more"
    assert await _get(c.inbox[0]) == (1, Channel.CONSENSUS, b"last words")
    assert transport.aborted and 1 not in c.nodes[0].inbound


async def test_a_deferred_frame_rides_with_the_next_frame_to_its_peer_or_leaves_alone_after_the_delay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dwcp.consensus.transport import tcp

    async with Cluster(3).running() as c:
        links = {p: c.nodes[0]._links[p] for p in (1, 2)}
        counting = {p: _CountingWrites(link.transport) for p, link in links.items()}
        for p, link in links.items():
            link.transport = counting[p]
        monkeypatch.setattr(tcp, "DEFER_S", 0.5)
        assert c.nodes[0].send_many([1, 2], Channel.CONSENSUS, b"ckpt", defer=True) == 2
        await asyncio.sleep(0.05)  # steps pass: nothing written yet
        assert counting[1].writes == [] and counting[2].writes == [] and c.inbox[1].empty()
        c.nodes[0].send(1, Channel.CONSENSUS, b"vote")  # to peer 1 only: the deferred frame goes along
        assert [await _get(c.inbox[1]) for _ in range(2)] == [(0, Channel.CONSENSUS, b"ckpt"),
                                                              (0, Channel.CONSENSUS, b"vote")]
        assert counting[1].writes == [len(encode_frame(Channel.CONSENSUS, b"ckpt")) +
                                      len(encode_frame(Channel.CONSENSUS, b"vote"))]
        assert counting[2].writes == [] and c.inbox[2].empty()  # peer 2 had nothing else: still waiting
        assert await _get(c.inbox[2], timeout=2.0) == (0, Channel.CONSENSUS, b"ckpt")  # the timer wrote it
        assert len(counting[2].writes) == 1 and len(counting[1].writes) == 1  # nothing written twice
