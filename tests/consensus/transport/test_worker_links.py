"""Worker links (workerlinks.py): a mutual TLS session carries the link key; the plain stream bound to it carries
frames each ending in a keyed BLAKE3 tag. Every frame is checked before it is acted on: a changed, injected,
replayed, reordered or dropped frame, or a stream for no session of ours, closes the link."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from dwcp.consensus.bullshark.messages import BatchStored, WorkerSetup
from dwcp.consensus.bullshark.worker import ACK, BATCH, DATA_PEER, PEER, REQUEST, Batch, batch_digest
from dwcp.consensus.core.crypto import generate_private_key
from dwcp.consensus.transport import dataplane
from dwcp.consensus.transport.framing import HEADER, Channel, FrameError
from dwcp.consensus.transport.workerlinks import TAG_SIZE, LinkMac, PeerReader, PeerSession, frame_pieces
from dwcp.runtime.peerauth import self_signed_certificate

KEY = bytes(range(32))
BATCH_BYTES = b"\x00\x00\x00\x05hello" * 3


class Plane:
    """What PeerReader hands frames to."""

    def __init__(self) -> None:
        self.got: list[tuple] = []

    def on_batch(self, peer: int, data, digest: bytes) -> None:
        self.got.append(("batch", peer, bytes(data), digest))

    def on_ack(self, peer: int, digest: bytes) -> None:
        self.got.append(("ack", peer, digest))

    def on_request(self, peer: int, digests) -> None:
        self.got.append(("request", peer, bytes(digests)))


class Transport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def frames(key: bytes = KEY) -> list[bytes]:
    """A batch, an ACK and a REQUEST as the sender's link writes them (sequence numbers 0, 1, 2)."""
    mac = LinkMac(key)
    digest = batch_digest(BATCH_BYTES)
    return [b"".join(bytes(p) for p in frame_pieces(mac, BATCH, BATCH_BYTES, digest)),
            b"".join(bytes(p) for p in frame_pieces(mac, ACK, b"a" * 32)),
            b"".join(bytes(p) for p in frame_pieces(mac, REQUEST, b"r" * 64))]


def reader() -> tuple[PeerReader, Plane, PeerSession]:
    plane = Plane()
    session = PeerSession(peer=2, key=KEY, transport=Transport())  # type: ignore[arg-type]
    session.stream = Transport()  # type: ignore[assignment]
    return PeerReader(plane, session), plane, session  # type: ignore[arg-type]


def feed_bytewise(peer_reader: PeerReader, data: bytes) -> None:
    for i in range(len(data)):
        peer_reader.buffer()[:1] = data[i:i + 1]
        peer_reader.updated(1)


def test_tagged_frames_fed_one_byte_at_a_time_are_all_delivered_in_order() -> None:
    peer_reader, plane, session = reader()
    feed_bytewise(peer_reader, b"".join(frames()))
    assert plane.got == [("batch", 2, BATCH_BYTES, batch_digest(BATCH_BYTES)), ("ack", 2, b"a" * 32),
                         ("request", 2, b"r" * 64)]
    assert not session.transport.closed and not session.stream.closed


def _tampered_batch_byte(fs: list[bytes]) -> list[bytes]:
    frame = bytearray(fs[0])
    frame[HEADER.size + 3] ^= 1  # a byte of the batch
    return [bytes(frame), *fs[1:]]


def _tampered_tag(fs: list[bytes]) -> list[bytes]:
    return [fs[0][:-1] + bytes([fs[0][-1] ^ 1]), *fs[1:]]


@pytest.mark.parametrize(("name", "change", "delivered"), [
    ("a batch byte changed", _tampered_batch_byte, 0),
    ("a tag byte changed", _tampered_tag, 0),
    ("the batch replayed", lambda fs: [fs[0], fs[0], *fs[1:]], 1),
    ("two frames reordered", lambda fs: [fs[1], fs[0], fs[2]], 0),
    ("a frame dropped", lambda fs: [fs[0], fs[2]], 1),
    ("frames under another key", lambda fs: frames(os.urandom(32)), 0),
    ("a frame without a tag", lambda fs: [HEADER.pack(1 + 32, Channel.DATA) + bytes((ACK,)) + b"a" * 32], 0),
])
def test_a_frame_that_fails_its_tag_is_not_acted_on_and_closes_the_link(name, change, delivered) -> None:
    peer_reader, plane, session = reader()
    for frame in change(frames()):
        if session.transport.closed:
            break
        feed_bytewise(peer_reader, frame)
    assert len(plane.got) == delivered, name  # only the good frames before the bad one
    assert session.transport.closed and session.stream.closed, name


def test_a_tag_covers_the_frame_kind() -> None:
    sender, receiver = LinkMac(KEY), LinkMac(KEY)
    tag = sender.tag(ACK, b"d" * 32)
    with pytest.raises(FrameError):
        receiver.check(REQUEST, b"d" * 32, tag)


# -- real links over loopback: two worker data planes in one loop -------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Primary:
    def __init__(self) -> None:
        self.told: list = []

    def write(self, data: bytes) -> None:
        from dwcp.consensus.transport.locallink import _DECODERS, _HEAD

        _, kind = _HEAD.unpack_from(data)
        self.told.append(_DECODERS[kind].decode(data[_HEAD.size:]))


@pytest.fixture
def planes(tmp_path: Path):
    keys = {i: generate_private_key() for i in range(2)}
    certificates = {i: self_signed_certificate(k, f"node-{i}") for i, k in keys.items()}
    ports = {i: _free_port() for i in range(2)}
    made = []
    for i in range(2):
        setup = WorkerSetup(
            node_id=i, private_key=keys[i], certificates=certificates, label="test-links/1", host="127.0.0.1",
            port=ports[i], peers={1 - i: ("127.0.0.1", ports[1 - i])}, data_dir=str(tmp_path / f"w{i}"),
            batch_size=500_000, max_batch_delay=0.1, max_tx=4096, max_inflight=16, quorum=2)
        made.append(dataplane.Dataplane(setup, Primary()))  # type: ignore[arg-type]
    return made


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _stop(*planes_) -> None:
    for plane in planes_:
        tasks = [link.task for link in plane.links.values()] + [plane._reporter, plane._retrier]
        for task in tasks:
            task.cancel()
        plane.server.close()
        for link in plane.links.values():
            if link.transport is not None:
                link.transport.close()
        for session in list(plane.sessions.values()):
            session.close()
    await asyncio.sleep(0.05)


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """The worker closed the connection (a reset when it closed with our bytes unread)."""
    try:
        return await asyncio.wait_for(reader.read(), 5.0) == b""
    except ConnectionResetError:
        return True


def _stored(primary: Primary) -> list[bytes]:
    return [m.ref.digest for m in primary.told if isinstance(m, BatchStored) and not m.own]


@pytest.mark.network
@pytest.mark.timeout(30)
async def test_a_batch_crosses_a_real_link_and_its_acknowledgement_comes_back(planes) -> None:
    a, b = planes
    await a.start()
    await b.start()
    try:
        await _until(lambda: a.links[1].up and b.links[0].up)
        digest = batch_digest(BATCH_BYTES)
        a.seal(Batch(digest, memoryview(BATCH_BYTES), 3), None)
        await _until(lambda: digest in _stored(b.link))  # type: ignore[arg-type]
        assert bytes(b.store.get(digest)) == BATCH_BYTES
        await _until(lambda: any(isinstance(m, BatchStored) and m.own and m.ref.digest == digest
                                 for m in a.link.told))  # type: ignore[attr-defined]  # 2 of 2 hold it
    finally:
        await _stop(a, b)


@pytest.mark.network
@pytest.mark.timeout(30)
async def test_a_stream_for_no_session_of_ours_is_refused_and_nothing_on_it_is_stored(planes) -> None:
    _, b = planes
    await b.start()
    try:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", b.setup.port)
        digest = batch_digest(BATCH_BYTES)
        forged = b"".join(bytes(p) for p in frame_pieces(LinkMac(KEY), BATCH, BATCH_BYTES, digest))
        writer.write(DATA_PEER + os.urandom(16) + forged)
        assert await _closed_by_peer(reader)  # closed by the worker
        writer.close()
        # a session opened without TLS (the greeting, then plaintext) is no better
        reader, writer = await asyncio.open_connection("127.0.0.1", b.setup.port)
        writer.write(PEER + os.urandom(48))
        assert await _closed_by_peer(reader)
        writer.close()
        await asyncio.sleep(0.1)
        assert digest not in b.store and not _stored(b.link) and not b.sessions  # type: ignore[arg-type]
        assert loop.is_running()
    finally:
        await _stop(b)


@pytest.mark.network
@pytest.mark.timeout(30)
async def test_a_stranger_who_saw_a_session_id_cannot_bind_a_stream_to_it(planes) -> None:
    """The stream's session id crosses the network in the clear. A stranger who read it and binds a stream first
    fails the first tag: nothing is stored, and the session is closed with it (denial of service only; the
    dialler redials with a new id and key)."""
    a, b = planes
    await b.start()
    try:
        session_reader, session_writer = await asyncio.open_connection("127.0.0.1", b.setup.port)
        session_writer.write(PEER)
        await session_writer.start_tls(a.auth.client_context(), server_hostname=None)  # node 0's real key
        session_id, key = os.urandom(16), os.urandom(32)
        session_writer.write(session_id + key)
        assert await asyncio.wait_for(session_reader.readexactly(1), 5.0) == b"\x01"  # READY: b holds the key
        assert list(b.sessions) == [session_id]

        reader, writer = await asyncio.open_connection("127.0.0.1", b.setup.port)
        digest = batch_digest(BATCH_BYTES)
        forged = b"".join(bytes(p) for p in frame_pieces(LinkMac(KEY), BATCH, BATCH_BYTES, digest))
        writer.write(DATA_PEER + session_id + forged)  # the id, but not the key
        assert await _closed_by_peer(reader)
        assert await _closed_by_peer(session_reader)  # the session went with it
        writer.close()
        session_writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", b.setup.port)  # the real stream, late
        writer.write(DATA_PEER + session_id + b"".join(
            bytes(p) for p in frame_pieces(LinkMac(key), BATCH, BATCH_BYTES, digest)))
        assert await _closed_by_peer(reader)  # its session is gone: refused too
        writer.close()
        await asyncio.sleep(0.1)
        assert digest not in b.store and not b.sessions
    finally:
        await _stop(b)


@pytest.mark.network
@pytest.mark.timeout(30)
async def test_a_bound_stream_is_acted_on_once_its_tags_check(planes) -> None:
    """The same hand-made session as above, with the real key: the batch is stored and acknowledged."""
    a, b = planes
    await b.start()
    try:
        session_reader, session_writer = await asyncio.open_connection("127.0.0.1", b.setup.port)
        session_writer.write(PEER)
        await session_writer.start_tls(a.auth.client_context(), server_hostname=None)
        session_id, key = os.urandom(16), os.urandom(32)
        session_writer.write(session_id + key)
        assert await asyncio.wait_for(session_reader.readexactly(1), 5.0) == b"\x01"
        reader, writer = await asyncio.open_connection("127.0.0.1", b.setup.port)
        digest = batch_digest(BATCH_BYTES)
        writer.write(DATA_PEER + session_id + b"".join(
            bytes(p) for p in frame_pieces(LinkMac(key), BATCH, BATCH_BYTES, digest)))
        await _until(lambda: digest in b.store)
        assert bytes(b.store.get(digest)) == BATCH_BYTES
        writer.close()
        session_writer.close()
    finally:
        await _stop(b)


def test_tags_are_sixteen_bytes_of_keyed_blake3() -> None:
    from blake3 import blake3

    digest = batch_digest(BATCH_BYTES)
    tag = LinkMac(KEY).tag(BATCH, digest)
    assert len(tag) == TAG_SIZE == 16
    assert tag == blake3((0).to_bytes(8, "big") + bytes((BATCH,)) + digest, key=KEY).digest(16)
