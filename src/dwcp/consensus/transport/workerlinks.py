"""Links between Narwhal workers of different nodes (for `dataplane.py`): one per direction, as in
tcp.py. `PeerLink` dials a peer, runs mutual TLS 1.3 (runtime/peerauth.py) and only writes on that
connection; `PeerReader` reads an accepted, authenticated peer's BATCH / ACK / REQUEST frames and
hands them to the `Dataplane`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from typing import TYPE_CHECKING

from dwcp.consensus.bullshark.worker import ACK, BATCH, DIGEST_SIZE, PEER, REQUEST
from dwcp.consensus.transport.framing import Channel, FrameError, FrameReader
from dwcp.consensus.transport.peers import Backoff
from dwcp.runtime.peerauth import PeerAuthError

if TYPE_CHECKING:
    from dwcp.consensus.transport.dataplane import Dataplane

log = logging.getLogger("dwcp.bullshark.worker")
# Bytes buffered for one peer before our new batches skip it (it gets them later, pushed or fetched). Its ACKs to
# us and our REQUESTs share the link, so they wait behind this much: with 8 MiB (~0.3 s at a saturated link)
# a slow reader's own batches waited for acknowledgements that long and held its clients back (max_inflight).
# 2 MiB, interleaved at 100,000 tx/s offered: 44,549 / 54,715 / 70,499 -> 59,541 / 69,800 / 72,617 tx/s.
WRITE_HIGH_WATER = 2 * 1024 * 1024
SENT_MEMORY = 4096  # batches remembered as written on a connection (2 GB of 500 KB batches: any backlog)


class PeerLink:
    """Our outbound connection to one peer's worker (we only write on it)."""

    def __init__(self, plane: Dataplane, peer: int) -> None:
        self.plane, self.peer = plane, peer
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.up = False
        self.missed: set[bytes] = set()  # our batches not written to this peer (link down or backed up)
        self.acks: set[bytes] = set()  # acknowledgements we owe this peer and could not send
        # Batches written on the current connection, oldest first: a request for one of them is not answered
        # again (it is still queued behind the backlog that made the peer ask; TCP delivers it). A new
        # connection starts empty, since what the old one buffered may be lost.
        self.sent: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def sent_batch(self, digest: bytes) -> None:
        self.sent[digest] = None
        if len(self.sent) > SENT_MEMORY:
            self.sent.popitem(last=False)

    def write(self, pieces: list, force: bool = False) -> bool:
        """Send now if the link is up and not backed up (`force`: small control frames always go)."""
        if self.transport is None or not self.up or self.transport.is_closing():
            return False
        if force or self.writable.is_set():
            self.transport.writelines(pieces)
            return True
        return False

    async def dial_forever(self) -> None:
        host, port = self.plane.setup.peers[self.peer]
        backoff = Backoff(0.05, 2.0)
        loop = asyncio.get_running_loop()
        while True:
            closed = loop.create_future()
            try:
                raw, proto = await asyncio.wait_for(
                    loop.create_connection(lambda closed=closed: Outbound(self, closed), host, port), 2.0)
                raw.write(PEER)
                transport = await loop.start_tls(raw, proto, self.plane.auth.client_context(), server_hostname=None,
                                                 ssl_handshake_timeout=3.0)
                peer = self.plane.auth.peer_of(transport.get_extra_info("ssl_object"))
                if peer != self.peer:
                    raise PeerAuthError("wrong_peer", f"dialled worker {self.peer} but {peer} answered")
                transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
                self.transport, self.up = transport, True
                self.sent.clear()
                self.writable.set()
                backoff.reset()
                log.info("worker link to %s up", self.peer)
                self.plane.resend(self.peer)
                await closed
            except (OSError, TimeoutError, PeerAuthError, ssl.SSLError, ConnectionError) as exc:
                log.info("worker link to %s down: %r", self.peer, exc)
            finally:
                self.up = False
                if self.transport is not None:
                    self.transport.close()
                self.transport = None
            await asyncio.sleep(backoff.next_delay())


class Outbound(asyncio.Protocol):
    """Dialled connection: greeting byte, TLS, then flow-controlled writes only (the peer never writes)."""

    def __init__(self, link: PeerLink, closed: asyncio.Future) -> None:
        self.link, self.closed = link, closed

    def data_received(self, data: bytes) -> None:
        log.warning("worker %s wrote on our outbound link; closing it", self.link.peer)
        if self.link.transport is not None:
            self.link.transport.close()

    def pause_writing(self) -> None:
        self.link.writable.clear()

    def resume_writing(self) -> None:
        self.link.writable.set()

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class PeerReader:
    """Frames from an authenticated peer's worker: BATCH / ACK / REQUEST."""

    def __init__(self, plane: Dataplane, transport: asyncio.Transport, peer: int | None) -> None:
        self.plane, self.transport, self.peer = plane, transport, peer
        self.reader = FrameReader()
        self.early: list[tuple[Channel, bytes]] = []  # frames read before start_tls named the peer (copied)

    def buffer(self) -> memoryview:
        return self.reader.buffer()

    def authenticated(self, peer: int) -> None:
        self.peer = peer
        early, self.early = self.early, []
        for frame in early:
            self._frame(frame)

    def updated(self, nbytes: int) -> None:
        try:
            frame = self.reader.filled(nbytes)
        except FrameError as exc:
            log.warning("closing the link from worker %s: %s", self.peer, exc)
            self.transport.close()
            return
        if frame is not None and self.peer is None:
            self.early.append((frame[0], bytes(frame[1])))  # the reader's buffer takes the next frame
        elif frame is not None:
            self._frame(frame)

    def _frame(self, frame: tuple[Channel, bytes | memoryview]) -> None:
        """One frame; `body` may be a view of the reader's reused buffer: nothing here keeps it."""
        try:
            channel, body = frame
            if channel is not Channel.DATA or not body:
                raise FrameError("unexpected_channel", f"{channel.name} frame on a worker link")
            kind = body[0]
            if kind == BATCH:
                self.plane.on_batch(self.peer, body)
            elif kind == ACK and len(body) == 1 + DIGEST_SIZE:
                self.plane.on_ack(self.peer, bytes(body[1:]))
            elif kind == REQUEST:
                self.plane.on_request(self.peer, memoryview(body)[1:])
            else:
                raise FrameError("malformed", f"worker frame kind {kind} of {len(body)} bytes")
        except FrameError as exc:
            log.warning("closing the link from worker %s: %s", self.peer, exc)
            self.transport.close()
