"""The asyncio TCP transport: authenticated, framed, bounded, self-healing links to every peer.

Connections: one per direction. Node A *dials* B to send to B, and *accepts* B's dial to receive
from B. So each TCP connection has exactly one writer of frames, there is no tie-break for two
nodes dialling each other at once, and a restarted node is simply redialled. Both ends of every
connection run the mutual handshake (handshake.py) before a frame is passed on, so an unknown key
is refused on either side. Integrity of what flows afterwards comes from per-message signatures
checked by the driver (the handshake gives identity, not a per-frame MAC).

Failure handling: a dialler that loses its connection redials with exponential backoff + jitter;
frames for a peer wait in its bounded `OutboundQueue` meanwhile (peers.py). A frame with a bad
header closes only that connection (the stream cannot be resynced) and is counted; nothing here
raises into the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from dwcp.consensus.transport.framing import DEFAULT_LIMITS, Channel, FrameDecoder, FrameError, encode_frame
from dwcp.consensus.transport.handshake import Handshake, HandshakeError
from dwcp.consensus.transport.metrics import TransportMetrics
from dwcp.consensus.transport.peers import Backoff, OutboundQueue, QueueLimits

log = logging.getLogger("dwcp.consensus.transport")

FrameHandler = Callable[[int, Channel, bytes], None]  # (authenticated peer id, channel, payload)
READ_CHUNK = 256 * 1024


@dataclass
class TransportConfig:
    me: int
    host: str
    port: int
    peers: Mapping[int, tuple[str, int]]  # every other committee member's consensus address
    public_keys: Mapping[int, bytes]  # raw Ed25519 public keys of the whole committee
    sign: Callable[[bytes], bytes]
    domain: bytes  # binds handshakes to one protocol + committee
    frame_limits: dict[Channel, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    queue_limits: dict[Channel, QueueLimits] = field(default_factory=dict)
    handshake_timeout: float = 3.0
    connect_timeout: float = 2.0
    backoff_initial: float = 0.05
    backoff_max: float = 2.0


class TcpTransport:
    """Start with `await start()`, send with `send()`, stop with `await stop()`; inbound frames go to `on_frame`."""

    def __init__(
        self, config: TransportConfig, on_frame: FrameHandler, metrics: TransportMetrics | None = None
    ) -> None:
        self.config = config
        self._on_frame = on_frame
        self._metrics = metrics
        self._queues = {
            p: OutboundQueue(config.queue_limits, on_drop=self._dropped_hook()) for p in config.peers
        }
        self._connected: set[int] = set()
        self._inbound: dict[int, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._rng = random.Random()
        self._stopping = False

    # -- public ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.config.host, self.config.port)
        for peer in self.config.peers:
            self._spawn(self._dial_forever(peer))

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._inbound.values()):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._connected.clear()
        self._set_peers()

    def send(self, peer: int, channel: Channel, payload: bytes) -> bool:
        """Queue for `peer` without waiting; False if the frame or an older one was dropped (queue full)."""
        queue = self._queues.get(peer)
        if queue is None:
            raise KeyError(f"node {peer} is not a peer of node {self.config.me}")
        return queue.offer(channel, encode_frame(channel, payload, self.config.frame_limits))

    def send_many(self, peers: Iterable[int], channel: Channel, payload: bytes) -> int:
        """`send` to each of `peers`, framing the payload once; returns how many were queued."""
        frame = encode_frame(channel, payload, self.config.frame_limits)
        sent = 0
        for peer in peers:
            queue = self._queues.get(peer)
            if queue is None:
                raise KeyError(f"node {peer} is not a peer of node {self.config.me}")
            queue.offer(channel, frame)
            sent += 1
        return sent

    async def send_wait(self, peer: int, channel: Channel, payload: bytes) -> None:
        """Queue for `peer`, waiting while its queue is full: backpressure for bulk producers (DATA)."""
        await self._queues[peer].put(channel, encode_frame(channel, payload, self.config.frame_limits))

    @property
    def connected(self) -> frozenset[int]:
        """Peers with an authenticated outbound connection right now."""
        return frozenset(self._connected)

    @property
    def inbound(self) -> frozenset[int]:
        """Peers with an authenticated inbound connection right now."""
        return frozenset(self._inbound)

    def queue(self, peer: int) -> OutboundQueue:
        return self._queues[peer]

    @property
    def bound_port(self) -> int:
        assert self._server is not None and self._server.sockets
        return self._server.sockets[0].getsockname()[1]

    # -- internals ---------------------------------------------------------------------------
    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _dropped_hook(self) -> Callable[[Channel, int], None]:
        def hook(channel: Channel, n: int) -> None:
            if self._metrics is not None:
                self._metrics.dropped(channel.name.lower(), n)

        return hook

    def _reject(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.rejected(reason)

    def _set_peers(self) -> None:
        if self._metrics is not None:
            self._metrics.set_peers(len(self._connected))

    def _handshake(self, expected: int | None) -> Handshake:
        c = self.config
        return Handshake(me=c.me, sign=c.sign, public_keys=c.public_keys, domain=c.domain, expected_peer=expected)

    async def _run_handshake(
        self, hs: Handshake, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: FrameDecoder
    ) -> list:
        """Drive `hs` to completion; returns frames that arrived right behind the handshake."""
        limits = self.config.frame_limits
        writer.write(encode_frame(Channel.HANDSHAKE, hs.hello(), limits))
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                raise ConnectionResetError("peer closed the connection during the handshake")
            frames = decoder.feed(data)  # a bad header after the handshake is the caller's to handle
            while frames:
                frame = frames.pop(0)
                if frame.channel is not Channel.HANDSHAKE:
                    raise HandshakeError("unexpected", f"{frame.channel.name} frame before the handshake completed")
                for reply in hs.receive(frame.payload):
                    writer.write(encode_frame(Channel.HANDSHAKE, reply, limits))
                if hs.done:
                    await writer.drain()
                    return frames
            if decoder.failed is not None:
                raise decoder.failed
            await writer.drain()

    async def _dial_forever(self, peer: int) -> None:
        host, port = self.config.peers[peer]
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max, rng=self._rng)
        while not self._stopping:
            writer: asyncio.StreamWriter | None = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), self.config.connect_timeout
                )
                hs = self._handshake(expected=peer)
                decoder = FrameDecoder(self.config.frame_limits)
                await asyncio.wait_for(self._run_handshake(hs, reader, writer, decoder), self.config.handshake_timeout)
                backoff.reset()
                self._connected.add(peer)
                self._set_peers()
                log.info("connected to node %s at %s:%s", peer, host, port)
                await self._write_loop(peer, reader, writer)
            except HandshakeError as exc:
                self._reject(f"handshake_{exc.reason}")
                log.warning("handshake with node %s failed: %s", peer, exc)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, FrameError) as exc:
                log.debug("link to node %s down: %s", peer, exc)
            finally:
                if peer in self._connected:
                    self._connected.discard(peer)
                    self._set_peers()
                if writer is not None:
                    writer.close()
            if not self._stopping:
                await asyncio.sleep(backoff.next_delay())

    async def _write_loop(self, peer: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Move queued frames onto the socket until either side fails; the peer never writes here.

        No per-wakeup future or `asyncio.wait`: the one read below completes when the peer closes
        (or misbehaves by writing) and then wakes the queue, so the loop is a plain wait/take/write.
        """
        queue = self._queues[peer]
        eof = asyncio.ensure_future(reader.read(1))
        eof.add_done_callback(lambda _: queue.wake())
        try:
            while True:
                await queue.wait_ready()
                if eof.done():
                    raise ConnectionResetError(f"node {peer} closed the connection")
                writer.writelines(queue.take())
                await writer.drain()  # TCP backpressure: meanwhile new frames wait in the bounded queue
        finally:
            eof.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        peer: int | None = None
        try:
            hs = self._handshake(expected=None)
            decoder = FrameDecoder(self.config.frame_limits)
            pending = await asyncio.wait_for(
                self._run_handshake(hs, reader, writer, decoder), self.config.handshake_timeout
            )
            peer = hs.peer_id
            assert peer is not None
            old = self._inbound.pop(peer, None)
            if old is not None:  # the peer redialled (e.g. restarted): the newest connection wins
                old.close()
            self._inbound[peer] = writer
            self._deliver(peer, pending)
            while decoder.failed is None:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                self._deliver(peer, decoder.feed(data))
            if decoder.failed is not None:
                raise decoder.failed
        except HandshakeError as exc:
            self._reject(f"handshake_{exc.reason}")
            log.warning("refused inbound connection: %s", exc)
        except FrameError as exc:
            self._reject(exc.reason)
            log.warning("closing connection from node %s: %s", peer, exc)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("inbound connection from node %s ended: %s", peer, exc)
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio's stream callback logs cancelled accept tasks as errors)
        finally:
            if peer is not None and self._inbound.get(peer) is writer:
                del self._inbound[peer]
            writer.close()

    def _deliver(self, peer: int, frames: list) -> None:
        for frame in frames:
            if frame.channel is Channel.HANDSHAKE:
                self._reject("unexpected_handshake")
                continue
            try:
                self._on_frame(peer, frame.channel, frame.payload)
            except Exception:  # a handler bug must not kill the link to this peer
                log.exception("frame handler failed for a %s frame from node %s", frame.channel.name, peer)
                self._reject("handler_error")
