"""ConnectionGuard without sockets: which connection is dropped when, and why (slow-loris, floods)."""

from __future__ import annotations

import json

from dwcp.runtime.inventory import HttpLimits
from dwcp.runtime.server import ConnectionGuard, connection_limit


class Transport:
    def __init__(self) -> None:
        self.aborted = self.closed = False
        self.written = b""

    def abort(self) -> None:
        self.aborted = True

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True  # our side is done: FIN after the answer


class Loop:
    def __init__(self) -> None:
        self.timers: list[tuple[float, object, tuple]] = []

    def call_later(self, delay: float, fn, *args):
        self.timers.append((delay, fn, args))
        return object()

    def run_timers(self) -> None:
        timers, self.timers = self.timers, []
        for _, fn, args in timers:
            fn(*args)


class Conn:
    def __init__(self, loop: Loop, name: str) -> None:
        self.loop, self.name, self.transport, self.head_bytes = loop, name, Transport(), 0

    def __repr__(self) -> str:
        return self.name


def make(max_connections: int = 16, timeout: float = 10.0, header_bytes: int = 1024):
    now = [0.0]
    guard = ConnectionGuard(HttpLimits(max_connections=max_connections, header_timeout_s=timeout,
                                       max_header_bytes=header_bytes), clock=lambda: now[0])
    return guard, Loop(), now


def test_at_the_limit_a_new_connection_evicts_the_oldest_still_waiting_for_a_head() -> None:
    guard, loop, _ = make(max_connections=16)
    conns = [Conn(loop, f"c{i}") for i in range(16)]
    for c in conns:
        assert guard.opened(c)
    guard.busy(conns[0])  # c0 sent its request: the application's now, never evicted
    probe = Conn(loop, "health-probe")
    assert guard.opened(probe)
    assert conns[1].transport.aborted and not conns[0].transport.aborted
    assert guard.dropped["evicted"] == 1 and len(guard.live) == 16 and probe in guard.waiting


def test_when_every_connection_has_a_request_in_flight_the_new_one_is_refused() -> None:
    guard, loop, _ = make(max_connections=16)
    conns = [Conn(loop, f"c{i}") for i in range(16)]
    for c in conns:
        guard.opened(c)
        guard.busy(c)
    assert not guard.opened(Conn(loop, "late"))
    assert guard.dropped["over_limit"] == 1 and not any(c.transport.aborted for c in conns)


def test_a_head_trickled_slowly_is_cut_at_the_header_timeout_however_it_trickles() -> None:
    guard, loop, now = make(timeout=10.0)
    slow, prompt = Conn(loop, "slow"), Conn(loop, "prompt")
    guard.opened(slow)
    for _ in range(9):  # a byte a second keeps uvicorn's keep-alive timer away, not the head deadline
        now[0] += 1.0
        assert guard.received(slow, 1)
        loop.run_timers()
    guard.opened(prompt)
    guard.received(prompt, 100)
    guard.busy(prompt)
    now[0] += 1.0
    loop.run_timers()
    assert slow.transport.aborted and not prompt.transport.aborted
    assert guard.dropped["header_timeout"] == 1 and slow not in guard.live
    guard.wait(prompt)  # the response ended: idle again, with a fresh deadline
    now[0] += 9.0
    loop.run_timers()
    assert not prompt.transport.aborted
    now[0] += 1.5
    loop.run_timers()
    loop.run_timers()
    assert prompt.transport.aborted and loop.timers == []  # nothing waits: no sweeper left


def test_a_head_past_its_byte_limit_is_answered_431_naming_headers_then_closed() -> None:
    guard, loop, _ = make(header_bytes=1024)
    conn = Conn(loop, "big")
    guard.opened(conn)
    assert guard.received(conn, 1000)
    assert not guard.received(conn, 100)
    head, body = conn.transport.written.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 431 ") and b"connection: close" in head
    assert json.loads(body)["error"] == {"code": "header_too_large", "field": "headers",
                                         "message": "headers: the request head exceeds 1024 bytes"}
    assert conn.transport.closed and not conn.transport.aborted and guard.dropped["header_too_large"] == 1
    loop.run_timers()  # a client that has not read the answer by the grace period is aborted
    assert conn.transport.aborted
    guard.closed(conn)  # uvicorn's connection_lost after the abort
    assert not guard.live and not guard.waiting


def test_the_connection_limit_leaves_descriptors_for_files_and_peers() -> None:
    limits = HttpLimits(max_connections=10_000)
    assert connection_limit(limits, 1_048_576) == 10_000
    assert connection_limit(limits, 20_000) == 10_000
    assert connection_limit(limits, 8192) == 8192 - 1024
    assert connection_limit(limits, 1024) == 768


def test_a_sweep_drops_a_bounded_batch_per_loop_step() -> None:
    from dwcp.runtime.server import SWEEP_BATCH

    guard, loop, now = make(max_connections=10_000)
    conns = [Conn(loop, f"c{i}") for i in range(SWEEP_BATCH * 2 + 10)]
    for c in conns:
        guard.opened(c)
    now[0] += 11.0
    loop.run_timers()
    assert guard.dropped["header_timeout"] == SWEEP_BATCH and loop.timers[0][0] == 0
    loop.run_timers()
    loop.run_timers()
    assert guard.dropped["header_timeout"] == len(conns) and all(c.transport.aborted for c in conns)
