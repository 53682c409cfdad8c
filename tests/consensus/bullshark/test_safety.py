"""The primary's vote guard: one small record per vote, restored after a restart."""

from __future__ import annotations

from dwcp.consensus.bullshark.messages import Header
from dwcp.consensus.bullshark.safety import KEY, VOTE_PREFIX, SafetyRecord, VoteGuard
from dwcp.consensus.core.codec import encode


def header(author: int, round_: int, tag: bytes = b"a") -> Header:
    return Header(author=author, round=round_, payload=(), parents=(tag * 32,))


def test_each_vote_writes_only_its_authors_record_whose_size_does_not_grow_with_the_committee() -> None:
    guard = VoteGuard()
    records = [guard.voted(header(author, 5)) for author in range(100)]
    assert [r.key for r in records] == [f"{VOTE_PREFIX}{a}" for a in range(100)]
    assert len({len(r.value) for r in records[10:]}) == 1  # the 100th vote writes what the 11th did
    assert len(records[-1].value) < 64


def test_a_restarted_guard_refuses_a_second_header_of_a_round_it_voted_in_and_keeps_its_own_header() -> None:
    guard, disk = VoteGuard(), {}
    for out in [guard.voted(header(a, 3)) for a in range(4)] + [guard.proposed(header(9, 4))] + \
               [guard.voted(header(2, 4)), guard.voted(header(1, 6))]:
        disk[out.key] = out.value  # CoreState keeps the last value of each key
    restarted, own = VoteGuard(), None
    for key, value in sorted(disk.items()):  # the driver feeds Recovered in this order
        if key == KEY:
            own = restarted.recover(value)
        else:
            restarted.recover_vote(key, value)
    assert own == header(9, 4)
    assert restarted.last == guard.last
    assert restarted.refuse(header(2, 4, b"b")) == "equivocation"
    assert restarted.refuse(header(1, 5)) == "stale"
    assert restarted.refuse(header(2, 4)) == ""  # the same header again: vote again
    assert restarted.refuse(header(0, 4)) == ""


def test_a_single_record_written_before_per_author_records_still_restores_its_votes() -> None:
    old = encode(SafetyRecord(header=header(9, 7), votes=((1, 7, b"x" * 32), (2, 6, b"y" * 32))))
    newer = VoteGuard().voted(header(1, 8))
    guard = VoteGuard()
    guard.recover_vote(newer.key, newer.value)
    assert guard.recover(old) == header(9, 7)
    assert guard.last[2] == (6, b"y" * 32)
    assert guard.last[1] == (8, header(1, 8).digest)  # the newer per-author vote is not rolled back
    assert guard.refuse(header(2, 6, b"b")) == "equivocation"
