"""The asyncio TCP transport: authenticated, framed, bounded, self-healing links to every peer.

Connections: one per direction. Node A *dials* B to send to B, and *accepts* B's dial to receive
from B. So each TCP connection has exactly one writer of frames, there is no tie-break for two
nodes dialling each other at once, and a restarted node is simply redialled. Both ends of every
connection is mutually authenticated TLS 1.3 (`dwcp.runtime.peerauth`): each side proves the key
pinned for it in the committee file, the peer's id comes from that key only, and every frame after
is encrypted and integrity-protected, so a relay or an on-path attacker can only drop or delay.
Before authentication a listener reads nothing but TLS handshake records, from at most
`max_unauthenticated` strangers at once, each for at most `handshake_timeout` seconds.

Cost per frame. A node at n = 10 sends and receives ~40 small frames per block, so what each
frame costs in wake-ups matters more than bytes. Sending: `send()` queues the frame and marks
the peer; one `call_soon` callback per event-loop step (`_flush`) writes each marked peer's
queued frames as ONE `transport.write` (one TLS record, one syscall), however many frames the
core produced in that step. A frame sent with `defer` (nothing waits on it soon) marks nothing: it
rides with the next frame to its peer, or leaves DEFER_S later (session 11: one write per message sent
before, ~14 per block per node). No task wakes per frame: each connection's task sleeps until the
link closes or the socket's buffer passes its high-water mark (then it waits for `drain()`
while frames keep queueing, bounded). Receiving: an authenticated inbound connection is handed
to a plain `asyncio.Protocol` whose `data_received` decodes and delivers frames in the same
callback (no StreamReader buffer, no task wake per chunk).

Failure handling: a dialler that loses its connection redials with exponential backoff + jitter;
frames for a peer wait in its bounded `OutboundQueue` meanwhile (peers.py). A frame with a bad
header closes only that connection (the stream cannot be resynced) and is counted; nothing here
raises into the caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from dwcp.consensus.transport.framing import DEFAULT_LIMITS, Channel, FrameDecoder, FrameError, encode_frame
from dwcp.consensus.transport.metrics import TransportMetrics
from dwcp.consensus.transport.peers import Backoff, OutboundQueue, QueueLimits
from dwcp.runtime.peerauth import PeerAuth, PeerAuthError, PeerServer, ServeLimits, connect, serve

log = logging.getLogger("dwcp.consensus.transport")

FrameHandler = Callable[[int, Channel, bytes], None]  # (authenticated peer id, channel, payload)
_HANDSHAKE = Channel.HANDSHAKE  # per frame: a module global, not an enum class attribute (~0.25 us in 3.11)
WRITE_BATCH_BYTES = 256 * 1024  # joined per write: big enough for any step's votes, small enough to interleave
DEFER_S = 0.025  # the longest a frame sent with `defer` waits for another frame to its peer (~a block at 1,000 tx/s)


class _Link:
    """A peer's authenticated outbound connection while it is writable; the flush writes here."""

    __slots__ = ("transport", "high_water", "blocked")

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self.high_water = transport.get_write_buffer_limits()[1]
        self.blocked = asyncio.Event()  # set: the flush stopped here (buffer full) or the link closed


class _FrameReceiver(asyncio.Protocol):
    """An inbound connection's frames, decoded and delivered inside `data_received` (no reader task)."""

    def __init__(self, deliver: Callable[[list], None], limits: dict[Channel, int]) -> None:
        self._deliver = deliver
        self._decoder = FrameDecoder(limits)
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()  # None on EOF, else the error

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:  # cannot happen after `failed` is checked below, but never raise into the loop
            self._finish(exc)
            return
        if frames:
            self._deliver(frames)
        if self._decoder.failed is not None:
            self._finish(self._decoder.failed)

    def eof_received(self) -> bool:
        self._finish(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc)

    def _finish(self, outcome: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(outcome)


@dataclass
class TransportConfig:
    me: int
    host: str
    port: int
    peers: Mapping[int, tuple[str, int]]  # every other committee member's consensus address
    auth: PeerAuth  # this node's key and the committee's pinned certificates
    frame_limits: dict[Channel, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    queue_limits: dict[Channel, QueueLimits] = field(default_factory=dict)
    handshake_timeout: float = 3.0
    max_unauthenticated: int = 64  # concurrent inbound connections still in the TLS handshake
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
            p: OutboundQueue(config.queue_limits, on_drop=self._dropped_hook(), on_ready=self._ready_hook(p))
            for p in config.peers
        }
        self._links: dict[int, _Link] = {}  # writable outbound connections
        self._marked: set[int] = set()  # peers with frames queued since the last flush
        self._flush_handle: asyncio.Handle | None = None
        self._deferred: set[int] = set()  # peers with deferred frames queued since the last deferred flush
        self._defer_handle: asyncio.TimerHandle | None = None
        self._connected: set[int] = set()
        self._inbound: dict[int, asyncio.StreamWriter] = {}
        self._server: PeerServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._rng = random.Random()
        self._stopping = False

    # -- public ------------------------------------------------------------------------------
    async def start(self) -> None:
        c = self.config
        limits = ServeLimits(max_unauthenticated=c.max_unauthenticated, handshake_timeout=c.handshake_timeout)
        self._server = await serve(c.auth, self._accept, c.host, c.port, limits, on_refused=self._reject)
        for peer in self.config.peers:
            self._spawn(self._dial_forever(peer))

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            await self._server.close()
        for writer in list(self._inbound.values()):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for handle in (self._flush_handle, self._defer_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._defer_handle = None
        self._links.clear()
        self._connected.clear()
        self._set_peers()

    def send(self, peer: int, channel: Channel, payload: bytes) -> bool:
        """Queue for `peer` without waiting; False if the frame or an older one was dropped (queue full)."""
        queue = self._queues.get(peer)
        if queue is None:
            raise KeyError(f"node {peer} is not a peer of node {self.config.me}")
        return queue.offer(channel, encode_frame(channel, payload, self.config.frame_limits))

    def send_many(self, peers: Iterable[int], channel: Channel, payload: bytes, defer: bool = False) -> int:
        """`send` to each of `peers`, framing the payload once; returns how many were queued.

        `defer`: the frame need not leave at once (a checkpoint, a trust report): it waits, up
        to DEFER_S, in the peer's queue for the next frame sent to that peer, and leaves in the same write (one
        TLS record, one syscall, one read and one ACK at the peer instead of two of each); if none comes, a
        timer writes it. Order per channel is kept either way (the queue is FIFO)."""
        frame = encode_frame(channel, payload, self.config.frame_limits)
        sent = 0
        for peer in peers:
            queue = self._queues.get(peer)
            if queue is None:
                raise KeyError(f"node {peer} is not a peer of node {self.config.me}")
            queue.offer(channel, frame, ready=not defer)
            sent += 1
            if defer:
                self._deferred.add(peer)
        if defer and sent and self._defer_handle is None:
            self._defer_handle = asyncio.get_running_loop().call_later(DEFER_S, self._flush_deferred)
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
        assert self._server is not None
        return self._server.port

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

    def _ready_hook(self, peer: int) -> Callable[[], None]:
        def hook() -> None:
            if peer not in self._links:
                return  # no connection: the link writes the queue out when it comes up
            self._marked.add(peer)
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

        return hook

    def _flush(self) -> None:
        """Once per event-loop step in which frames were queued: each marked peer's frames, one write each."""
        self._flush_handle = None
        marked, self._marked = self._marked, set()
        for peer in marked:
            self._write_out(peer)

    def _flush_deferred(self) -> None:
        """DEFER_S after a deferred send: what no other frame took along goes now."""
        self._defer_handle = None
        deferred, self._deferred = self._deferred, set()
        for peer in deferred:
            if len(self._queues[peer]):
                self._write_out(peer)

    def _write_out(self, peer: int) -> None:
        link = self._links.get(peer)
        if link is None:
            return  # not connected: the frames wait (bounded) until the link is up again
        queue, transport = self._queues[peer], link.transport
        while len(queue):
            if transport.is_closing() or transport.get_write_buffer_size() >= link.high_water:
                link.blocked.set()  # the link's task drains (or notices the close), then writes the rest
                return
            frames = queue.take(WRITE_BATCH_BYTES)
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _reject(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.rejected(reason)

    def _set_peers(self) -> None:
        if self._metrics is not None:
            self._metrics.set_peers(len(self._connected))

    async def _dial_forever(self, peer: int) -> None:
        host, port = self.config.peers[peer]
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max, rng=self._rng)
        while not self._stopping:
            writer: asyncio.StreamWriter | None = None
            try:
                reader, writer = await connect(
                    self.config.auth, host, port, expect=peer,
                    timeout=self.config.connect_timeout + self.config.handshake_timeout,
                )
                backoff.reset()
                self._connected.add(peer)
                self._set_peers()
                log.info("connected to node %s at %s:%s", peer, host, port)
                await self._write_loop(peer, reader, writer)
            except PeerAuthError as exc:
                self._reject(f"handshake_{exc.reason}")
                log.warning("node at %s:%s is not node %s: %s", host, port, peer, exc)
            except ssl.SSLError as exc:
                self._reject("handshake_failed")
                log.warning("TLS handshake with node %s failed: %s", peer, exc)
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
        """Hold the link open for `_flush` until either side fails; the peer never writes here.

        The task wakes only when the link closes (the one read below completes when the peer closes,
        or misbehaves by writing) or when a flush found the socket buffer full: then it waits for
        `drain()` and writes what queued meanwhile. Frames themselves never wake it.
        """
        link = _Link(writer.transport)
        eof = asyncio.ensure_future(reader.read(1))

        def closed(_: asyncio.Future) -> None:
            if self._links.get(peer) is link:  # at once, so no flush writes into a dead connection
                del self._links[peer]
            link.blocked.set()

        eof.add_done_callback(closed)
        self._links[peer] = link
        try:
            self._write_out(peer)  # what queued while the link was down
            while True:
                await link.blocked.wait()
                if eof.done() or link.transport.is_closing():
                    raise ConnectionResetError(f"node {peer} closed the connection")
                link.blocked.clear()
                await writer.drain()  # TCP backpressure: meanwhile new frames wait in the bounded queue
                if link.transport.get_write_buffer_size() >= link.high_water:
                    await asyncio.sleep(0.005)  # the transport did not pause at our mark: do not spin
                self._write_out(peer)
        finally:
            eof.cancel()
            if self._links.get(peer) is link:
                del self._links[peer]

    async def _accept(self, peer: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """An authenticated inbound connection from `peer` (peerauth ran the handshake): read its frames.

        The connection moves from peerauth's StreamReader to a `_FrameReceiver`: bytes the reader
        already holds (frames sent right behind the handshake) are fed first, then the protocol gets
        every later read directly. Nothing awaits between the two, so the order is kept.
        """
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        transport = writer.transport
        try:
            old = self._inbound.pop(peer, None)
            if old is not None:  # the peer redialled (e.g. restarted): the newest connection wins
                old.transport.abort()
            self._inbound[peer] = writer
            receiver = _FrameReceiver(lambda frames: self._deliver(peer, frames), self.config.frame_limits)
            transport.set_protocol(receiver)
            reader.feed_eof()  # what the reader holds is all it will ever hold: read it without waiting
            buffered = await reader.read()
            transport.resume_reading()  # the reader may have paused reading at its buffer limit
            if buffered:
                receiver.data_received(buffered)
            if transport.is_closing():  # closed before the hand-over: the receiver will hear nothing more
                receiver.connection_lost(None)
            outcome = await receiver.done
            if outcome is not None:
                raise outcome
        except FrameError as exc:
            self._reject(exc.reason)
            log.warning("closing connection from node %s: %s", peer, exc)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.debug("inbound connection from node %s ended: %s", peer, exc)
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio's stream callback logs cancelled accept tasks as errors)
        finally:
            if self._inbound.get(peer) is writer:
                del self._inbound[peer]
            # We never write on an inbound link, so a graceful TLS close (close_notify, then waiting for
            # the peer's) would only keep the socket half-alive; abort so the dialler notices at once.
            transport.abort()

    def _deliver(self, peer: int, frames: list) -> None:
        for frame in frames:
            if frame.channel is _HANDSHAKE:
                self._reject("unexpected_handshake")
                continue
            try:
                self._on_frame(peer, frame.channel, frame.payload)
            except Exception:  # a handler bug must not kill the link to this peer
                log.exception("frame handler failed for a %s frame from node %s", frame.channel.name, peer)
                self._reject("handler_error")
