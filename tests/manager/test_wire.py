"""Frames on the manager-to-manager wire: `Connection.holding` sends many small frames in few writes."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from dwcp.manager.wire import HOLD_BYTES, Connection, Kind


class CountingSocket:
    """A socket whose `sendall` calls are counted (each is a TLS record or more and a syscall on a peer link)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock, self.sendalls = sock, 0

    def sendall(self, data) -> None:
        self.sendalls += 1
        self._sock.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


@pytest.fixture
def pair():
    with socket.create_server(("127.0.0.1", 0)) as server:  # TCP: the wire sets TCP_NODELAY
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    a.settimeout(10)
    b.settimeout(10)
    counted = CountingSocket(a)
    yield Connection(counted), counted, Connection(b)
    a.close()
    b.close()


def read_frames(conn: Connection, n: int, out: list) -> threading.Thread:
    def run() -> None:
        for _ in range(n):
            kind, meta, data = conn.receive(1 << 20)
            out.append((kind, meta, bytes(data)))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_small_frames_held_leave_in_a_few_writes_intact_and_in_order(pair):
    sender, counted, receiver = pair
    bodies = [os.urandom(4096 + i) for i in range(100)]
    got: list = []
    reader = read_frames(receiver, 2 * len(bodies), got)
    with sender.holding():
        for i, body in enumerate(bodies):  # a batch's objects: OFFER and CHUNK each
            sender.send(Kind.OFFER, {"tid": str(i), "size": len(body)})
            sender.send(Kind.CHUNK, {"tid": str(i), "i": 0}, body)
    reader.join(10)
    assert got == [frame for i, body in enumerate(bodies)
                   for frame in ((Kind.OFFER, {"tid": str(i), "size": len(body)}, b""),
                                 (Kind.CHUNK, {"tid": str(i), "i": 0}, body))]
    total = sum(len(b) + 60 for b in bodies)
    assert counted.sendalls <= total // HOLD_BYTES + 2, counted.sendalls  # not 200: one per frame


def test_waiting_for_an_answer_sends_what_is_held_first(pair):
    sender, counted, receiver = pair

    def answer() -> None:
        kind, meta, _ = receiver.receive(0)
        receiver.send(Kind.PONG, meta)

    th = threading.Thread(target=answer, daemon=True)
    th.start()
    with sender.holding():
        sender.send(Kind.PING, {"t": 1})
        assert counted.sendalls == 0  # held
        kind, meta, _ = sender.receive(0)  # would wait forever if the PING were still held
    assert (kind, meta) == (Kind.PONG, {"t": 1})
    th.join(10)


def test_a_large_frame_sends_the_held_ones_before_it(pair):
    sender, _, receiver = pair
    big = os.urandom(HOLD_BYTES * 3)
    got: list = []
    reader = read_frames(receiver, 3, got)
    with sender.holding():
        sender.send(Kind.OFFER, {"n": 1})
        sender.send(Kind.CHUNK, {"n": 2}, big)
        sender.send(Kind.COMMIT, {"n": 3})
    reader.join(10)
    assert [(k, m) for k, m, _ in got] == [(Kind.OFFER, {"n": 1}), (Kind.CHUNK, {"n": 2}), (Kind.COMMIT, {"n": 3})]
    assert got[1][2] == big


def test_a_block_that_raises_drops_what_it_held_and_the_connection_sends_directly_after(pair):
    sender, counted, receiver = pair
    with pytest.raises(RuntimeError), sender.holding():
        sender.send(Kind.OFFER, {"dropped": True})
        raise RuntimeError("reading the object failed")
    assert counted.sendalls == 0
    sender.send(Kind.COMMIT, {"n": 1})  # not held any more: leaves at once
    assert counted.sendalls == 1
    assert receiver.receive(0)[:2] == (Kind.COMMIT, {"n": 1})


def test_frames_sent_soon_wait_while_input_is_there_and_leave_before_a_receive_waits(pair):
    """The receiver's rule for a batch's answers: held while the next requests are already readable, sent
    together once it would wait for more."""
    requester, _, answerer = pair  # here `answerer` holds (the receiving site), `requester` sends requests
    counted = CountingSocket(answerer.sock)
    answerer.sock = counted
    for i in range(3):
        requester.send(Kind.OFFER, {"i": i})
    for _ in range(3):  # the second and third requests are already there: answers wait
        kind, meta, _ = answerer.receive(0)
        answerer.send(Kind.STATE, {"i": meta["i"]}, soon=True)
    assert counted.sendalls == 0
    got: list = []
    reader = read_frames(requester, 3, got)
    answerer.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):  # nothing more to read: the held answers leave before it waits
        answerer.receive(0)
    reader.join(10)
    assert counted.sendalls == 1
    assert [(k, m) for k, m, _ in got] == [(Kind.STATE, {"i": i}) for i in range(3)]
