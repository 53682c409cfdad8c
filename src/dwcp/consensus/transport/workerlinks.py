"""Links between Narwhal workers of different nodes (for `dataplane.py`): one per direction, as in
tcp.py. Each link is two TCP connections to the peer's worker port:

- the *session* (greeting byte `PEER`): mutual TLS 1.3 (runtime/peerauth.py: pinned Ed25519 certificates), which
  names the peer; the dialler then sends, inside TLS, a fresh random session id (16 bytes) and link key (32
  bytes), and the acceptor answers one byte once it holds them. Nothing else crosses it; it stays open for the
  link's life, and the link is down when either connection closes.
- the *stream* (greeting byte `DATA_PEER`, then the session id in the clear): plain TCP carrying the DATA frames
  (BATCH / ACK / REQUEST), each ending in a 16-byte keyed BLAKE3 tag (`LinkMac`) over its sequence number on
  this stream, its kind, and for a BATCH the batch's digest (the BLAKE3-256 that both ends compute anyway: the
  sender to name the batch, the receiver to store it), for the other kinds the frame's body itself.
  The receiver checks every tag before it acts on the frame; a wrong tag (changed, injected, replayed,
  reordered or dropped frame) closes both connections. A stream whose id is not a session of ours waiting for
  its stream is closed at once.

Batch bytes thus cross the network unencrypted (as in Narwhal; the clients' streams always did), but nothing on
the stream is believed without the key, which only the two authenticated ends hold: it comes from inside the
TLS session, no key exchange of our own. The tag over the digest instead of the bytes is hash-then-MAC: a
forged batch with the same tag needs a BLAKE3 collision, which the consensus already assumes away (a digest
names a batch). Cost (benchmarks/bullshark_bound.py): the TLS link took 1.8-2.1 ns/B of CPU, both ends; this
one 0.33 ns/B (docs/bullshark.md, docs/security.md "Worker links").

`PeerLink` dials a peer and only writes on the stream; `PeerReader` reads an accepted, bound stream and hands
checked frames to the `Dataplane`.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import os
import ssl
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from blake3 import blake3

from dwcp.consensus.bullshark.worker import ACK, BATCH, DATA_PEER, DIGEST_SIZE, PEER, REQUEST, batch_digest
from dwcp.consensus.transport.framing import HEADER, Channel, FrameError, FrameReader
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
SESSION_ID_SIZE, KEY_SIZE, TAG_SIZE = 16, 32, 16
SESSION = SESSION_ID_SIZE + KEY_SIZE  # what the dialler sends inside TLS
READY = b"\x01"  # the acceptor's answer on the session: it holds the key; the stream may come
BIND_TIMEOUT = 3.0  # seconds the dialler waits for READY
_SEQ = struct.Struct("!QB")


class LinkMac:
    """Tags of one stream direction, sans-IO: both ends count frames from 0, so a frame replayed, reordered or
    dropped is checked under the wrong number and fails like a changed one. `signed` is the batch's digest for a
    BATCH, else the frame's body after its kind byte."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a link key is {KEY_SIZE} bytes")
        self._key, self.seq = key, 0

    def tag(self, kind: int, signed: bytes | memoryview) -> bytes:
        mac = blake3(_SEQ.pack(self.seq, kind), key=self._key)
        mac.update(signed)
        self.seq += 1
        return mac.digest(TAG_SIZE)

    def check(self, kind: int, signed: bytes | memoryview, tag: bytes | memoryview) -> None:
        """FrameError (the link is dropped) unless `tag` is the next frame's."""
        if not hmac.compare_digest(self.tag(kind, signed), bytes(tag)):
            raise FrameError("bad_tag", f"frame {self.seq - 1} (kind {kind}) failed its link tag")


def frame_pieces(mac: LinkMac, kind: int, body: bytes | memoryview, digest: bytes | None = None) -> list:
    """A DATA frame: header, kind, body, tag (over `digest` for a BATCH, else over `body`)."""
    tag = mac.tag(kind, digest if kind == BATCH else body)
    return [HEADER.pack(1 + len(body) + TAG_SIZE, Channel.DATA), bytes((kind,)), body, tag]


class PeerLink:
    """Our outbound link to one peer's worker (we only write on it)."""

    def __init__(self, plane: Dataplane, peer: int) -> None:
        self.plane, self.peer = plane, peer
        self.transport: asyncio.Transport | None = None  # the stream
        self.mac: LinkMac | None = None
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

    def write(self, kind: int, body: bytes | memoryview, digest: bytes | None = None, force: bool = False) -> bool:
        """Send a frame now if the link is up and not backed up (`force`: small control frames always go)."""
        if self.transport is None or self.mac is None or not self.up or self.transport.is_closing():
            return False
        if force or self.writable.is_set():
            self.transport.writelines(frame_pieces(self.mac, kind, body, digest))
            return True
        return False

    async def dial_forever(self) -> None:
        host, port = self.plane.setup.peers[self.peer]
        backoff = Backoff(0.05, 2.0)
        loop = asyncio.get_running_loop()
        while True:
            closed = loop.create_future()
            session = stream = None
            try:
                raw, control = await asyncio.wait_for(
                    loop.create_connection(lambda closed=closed: Session(self, closed), host, port), 2.0)
                raw.write(PEER)
                session = await loop.start_tls(raw, control, self.plane.auth.client_context(),
                                               server_hostname=None, ssl_handshake_timeout=3.0)
                peer = self.plane.auth.peer_of(session.get_extra_info("ssl_object"))
                if peer != self.peer:
                    raise PeerAuthError("wrong_peer", f"dialled worker {self.peer} but {peer} answered")
                session_id, key = os.urandom(SESSION_ID_SIZE), os.urandom(KEY_SIZE)
                session.write(session_id + key)
                await asyncio.wait_for(asyncio.shield(control.ready), BIND_TIMEOUT)
                stream, _ = await asyncio.wait_for(
                    loop.create_connection(lambda closed=closed: Outbound(self, closed), host, port), 2.0)
                stream.write(DATA_PEER + session_id)
                stream.set_write_buffer_limits(high=WRITE_HIGH_WATER)
                self.transport, self.mac, self.up = stream, LinkMac(key), True
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
                for transport in (stream, session):
                    if transport is not None:
                        transport.close()
                self.transport, self.mac = None, None
            await asyncio.sleep(backoff.next_delay())


class Session(asyncio.Protocol):
    """Dialled session connection: greeting byte, TLS, our session id and key, the peer's READY; nothing more."""

    def __init__(self, link: PeerLink, closed: asyncio.Future) -> None:
        self.link, self.closed = link, closed
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if data == READY and not self.ready.done():
            self.ready.set_result(None)
            return
        log.warning("worker %s wrote %d unexpected bytes on our session; closing the link", self.link.peer, len(data))
        if not self.closed.done():
            self.closed.set_result(None)  # dial_forever closes both connections

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the session closed before the peer was ready"))
            self.ready.exception()  # retrieved: nobody may be waiting any more
        if not self.closed.done():
            self.closed.set_result(None)


class Outbound(asyncio.Protocol):
    """Dialled stream: greeting byte and session id, then flow-controlled writes only (the peer never writes)."""

    def __init__(self, link: PeerLink, closed: asyncio.Future) -> None:
        self.link, self.closed = link, closed

    def data_received(self, data: bytes) -> None:
        log.warning("worker %s wrote on our outbound link; closing it", self.link.peer)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.link.writable.clear()

    def resume_writing(self) -> None:
        self.link.writable.set()

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass(eq=False)
class PeerSession:
    """An accepted, authenticated session (acceptor's side): its key, and its stream once bound."""

    peer: int
    key: bytes
    transport: asyncio.BaseTransport  # the TLS connection
    stream: asyncio.BaseTransport | None = field(default=None)

    def close(self) -> None:
        self.transport.close()
        if self.stream is not None:
            self.stream.close()


class PeerReader:
    """Frames from a peer's worker on a stream bound to its session: each tag checked, then BATCH / ACK /
    REQUEST handed to the plane. A batch is hashed here (its digest is what its tag covers)."""

    def __init__(self, plane: Dataplane, session: PeerSession) -> None:
        self.plane, self.session, self.peer = plane, session, session.peer
        self.mac = LinkMac(session.key)
        self.reader = FrameReader()

    def buffer(self) -> memoryview:
        return self.reader.buffer()

    def updated(self, nbytes: int) -> None:
        try:
            frame = self.reader.filled(nbytes)
            if frame is not None:
                self._frame(*frame)
        except FrameError as exc:
            log.warning("closing the link from worker %s: %s", self.peer, exc)
            self.session.close()

    def _frame(self, channel: Channel, payload: memoryview) -> None:
        """One frame; `payload` is a view of the reader's reused buffer: nothing here keeps it."""
        if channel is not Channel.DATA or len(payload) < 1 + TAG_SIZE:
            raise FrameError("unexpected_channel", f"{channel.name} frame of {len(payload)} bytes on a worker link")
        kind, body, tag = payload[0], payload[1:-TAG_SIZE], payload[-TAG_SIZE:]
        if kind == BATCH:
            digest = batch_digest(body)
            self.mac.check(kind, digest, tag)
            self.plane.on_batch(self.peer, body, digest)
        elif kind == ACK and len(body) == DIGEST_SIZE:
            self.mac.check(kind, body, tag)
            self.plane.on_ack(self.peer, bytes(body))
        elif kind == REQUEST:
            self.mac.check(kind, body, tag)
            self.plane.on_request(self.peer, body)
        else:
            raise FrameError("malformed", f"worker frame kind {kind} of {len(payload)} bytes")
