"""Catch-up messages round-trip strictly; the planner asks peers that are ahead, one request at a time."""

from __future__ import annotations

import msgspec
import pytest

from dwcp.consensus.transport.sync import (
    CatchUpPlanner,
    SyncBlock,
    SyncBlocks,
    SyncDecodeError,
    SyncEnvelope,
    SyncRequest,
    SyncStatus,
    decode_sync,
    encode_sync,
)


@pytest.mark.parametrize(
    "msg",
    [SyncStatus(height=7), SyncRequest(start=3, end=9), SyncBlocks(blocks=[SyncBlock(1, b"blk", b"cert")])],
)
def test_round_trip(msg) -> None:
    assert decode_sync(encode_sync(msg)) == msg


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode([1, {"type": "nope"}]),
        msgspec.msgpack.encode([1, {"type": "status", "height": "seven"}]),
        msgspec.msgpack.encode(SyncEnvelope(99, SyncStatus(height=1))),
    ],
)
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(SyncDecodeError):
        decode_sync(data)


def test_nothing_to_do_when_no_peer_is_ahead() -> None:
    p = CatchUpPlanner()
    p.on_status(1, 5)
    assert not p.behind(5)
    assert p.next_request(0.0, 5) is None


def test_asks_a_peer_ahead_for_at_most_max_blocks() -> None:
    p = CatchUpPlanner(max_blocks=10)
    p.on_status(1, 3)
    p.on_status(2, 100)
    assert p.behind(3)
    assert p.next_request(0.0, 3) == (2, SyncRequest(start=4, end=13))


def test_one_request_in_flight_until_answered_or_timed_out() -> None:
    p = CatchUpPlanner(max_blocks=10, timeout=2.0)
    p.on_status(1, 50)
    p.on_status(2, 50)
    peer, _ = p.next_request(0.0, 0)
    assert p.next_request(1.0, 0) is None  # still in time
    again = p.next_request(2.5, 0)  # timed out: ask the other peer
    assert again is not None and again[0] != peer


def test_answer_lets_the_next_request_go_at_once() -> None:
    p = CatchUpPlanner(max_blocks=10)
    p.on_status(1, 25)
    assert p.next_request(0.0, 0) == (1, SyncRequest(1, 10))
    p.on_response(1, 10)
    assert p.next_request(0.1, 10) == (1, SyncRequest(11, 20))


def test_forgotten_peer_is_not_asked_until_it_reports_again() -> None:
    p = CatchUpPlanner()
    p.on_status(1, 9)
    p.next_request(0.0, 0)
    p.forget(1)
    assert p.next_request(0.1, 0) is None
    p.on_status(1, 9)
    assert p.next_request(0.2, 0) == (1, SyncRequest(1, 9))
