"""Parked headers come back once everything they waited for is here, and only then."""

from __future__ import annotations

import pytest

from dwcp.consensus.bullshark.messages import Header
from dwcp.consensus.bullshark.parking import Parked


def header(author: int, round_: int = 2) -> Header:
    return Header(author=author, round=round_, payload=(), parents=(), weak=())


def test_a_header_waiting_for_two_certificates_comes_back_after_the_second() -> None:
    parked = Parked()
    h = header(1)
    parked.park(7, h, [b"a", b"b"], links=True)
    assert parked.arrived([b"a"]) == []
    assert parked.arrived([b"x"]) == []  # nobody waited for it
    assert parked.arrived([b"b"]) == [(7, h)]
    assert len(parked) == 0
    assert parked.arrived([b"a", b"b"]) == []


def test_a_newer_header_of_the_same_author_replaces_the_older_and_its_waits() -> None:
    parked = Parked()
    parked.park(1, header(1, 2), [b"old"], links=False)
    newer = header(1, 3)
    parked.park(1, newer, [b"new"], links=False)
    assert parked.arrived([b"old"]) == []  # the old header's wait no longer releases anything
    assert parked.arrived([b"new"]) == [(1, newer)]


def test_after_gc_only_headers_waiting_for_certificates_are_handed_back() -> None:
    parked = Parked()
    on_links, on_batches = header(1), header(2)
    parked.park(1, on_links, [b"cert"], links=True)
    parked.park(2, on_batches, [b"batch"], links=False)
    assert parked.take_waiting_for_links() == [(1, on_links)]
    assert list(parked.headers) == [2]
    assert parked.arrived([b"cert"]) == []
    assert parked.arrived([b"batch"]) == [(2, on_batches)]


def test_a_header_must_wait_for_something() -> None:
    with pytest.raises(ValueError):
        Parked().park(1, header(1), [], links=True)


def test_a_batch_is_asked_for_again_after_1_2_4_8_16_16_ticks_and_forgotten_once_nothing_waits_for_it() -> None:
    from dwcp.consensus.bullshark.parking import BatchRequests

    requests, d = BatchRequests(), b"d" * 32
    asked = []
    for tick in range(60):
        if requests.due([d, d]):
            asked.append(tick)
        requests.next_tick({d})
    assert asked == [0, 1, 3, 7, 15, 31, 47]
    requests.next_tick(set())
    assert len(requests) == 0
    assert requests.due([d]) == (d,)  # wanted again later (a new header): asked at once
