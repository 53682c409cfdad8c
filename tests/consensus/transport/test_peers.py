"""Outbound queues stay bounded (drop-oldest or backpressure) and backoff grows with jitter."""

from __future__ import annotations

import asyncio
import random

import pytest

from dwcp.consensus.transport.framing import Channel
from dwcp.consensus.transport.peers import Backoff, OutboundQueue, QueueLimits


def test_offer_drops_oldest_when_frame_bound_reached() -> None:
    drops: list[tuple[Channel, int]] = []
    q = OutboundQueue({Channel.CONSENSUS: QueueLimits(max_frames=3)}, on_drop=lambda c, n: drops.append((c, n)))
    for i in range(5):
        q.offer(Channel.CONSENSUS, bytes([i]))
    assert q.take() == [b"\x02", b"\x03", b"\x04"]
    assert q.dropped[Channel.CONSENSUS] == 2
    assert drops == [(Channel.CONSENSUS, 1), (Channel.CONSENSUS, 1)]


def test_byte_bound_holds_under_a_flood() -> None:
    q = OutboundQueue({Channel.CONSENSUS: QueueLimits(max_frames=10**6, max_bytes=10_000)})
    for _ in range(100_000):  # a dead peer and a busy node: memory must stay bounded
        q.offer(Channel.CONSENSUS, b"x" * 100)
    assert q.queued_bytes(Channel.CONSENSUS) <= 10_000
    assert len(q) == 100
    assert q.dropped[Channel.CONSENSUS] == 100_000 - 100


def test_frame_larger_than_the_whole_queue_is_dropped_alone() -> None:
    q = OutboundQueue({Channel.CONSENSUS: QueueLimits(max_bytes=10)})
    q.offer(Channel.CONSENSUS, b"keep")
    assert q.offer(Channel.CONSENSUS, b"y" * 11) is False
    assert q.take() == [b"keep"]


def test_take_serves_channels_by_priority() -> None:
    q = OutboundQueue()
    q.offer(Channel.DATA, b"batch")
    q.offer(Channel.SYNC, b"sync")
    q.offer(Channel.CONSENSUS, b"vote")
    assert q.take() == [b"vote", b"sync", b"batch"]
    assert len(q) == 0


def test_take_respects_max_bytes_but_returns_at_least_one() -> None:
    q = OutboundQueue()
    q.offer(Channel.DATA, b"a" * 1000)
    q.offer(Channel.DATA, b"b" * 1000)
    assert q.take(max_bytes=10) == [b"a" * 1000]
    assert q.take(max_bytes=10) == [b"b" * 1000]


async def test_put_waits_for_room_instead_of_dropping() -> None:
    q = OutboundQueue({Channel.DATA: QueueLimits(max_frames=2)})
    await q.put(Channel.DATA, b"1")
    await q.put(Channel.DATA, b"2")
    third = asyncio.create_task(q.put(Channel.DATA, b"3"))
    await asyncio.sleep(0.01)
    assert not third.done()  # backpressure: the producer is parked, nothing dropped
    assert q.take(max_bytes=1) == [b"1"]
    await asyncio.wait_for(third, 1.0)
    assert q.take() == [b"2", b"3"]
    assert q.dropped[Channel.DATA] == 0


def test_backoff_grows_to_the_cap_with_jitter_and_resets() -> None:
    b = Backoff(initial=0.1, maximum=1.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(8)]
    steps = [min(1.0, 0.1 * 2**i) for i in range(8)]
    for d, step in zip(delays, steps, strict=True):
        assert step / 2 <= d <= step
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    b.reset()
    assert b.next_delay() <= 0.1


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0, maximum=1)


def test_ready_hook_fires_on_every_queued_frame_and_count_follows_take_and_evictions() -> None:
    marks: list[int] = []
    q = OutboundQueue({Channel.CONSENSUS: QueueLimits(max_frames=2)}, on_ready=lambda: marks.append(len(q)))
    q.offer(Channel.CONSENSUS, b"a")
    q.offer(Channel.SYNC, b"s")
    q.offer(Channel.CONSENSUS, b"b")
    q.offer(Channel.CONSENSUS, b"c")  # evicts "a"
    assert marks == [1, 2, 3, 3]
    assert len(q) == 3
    assert q.take() == [b"b", b"c", b"s"]
    assert len(q) == 0
    q.offer(Channel.DATA, b"d")
    assert q.clear(Channel.DATA) == 1 and len(q) == 0
