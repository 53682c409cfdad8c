"""Per-peer state that outlives a connection: the bounded outbound queue and the reconnect backoff.

A peer that is slow or down must cost us bounded memory and must never stall the driver, which
runs every node's protocol core on one event loop. So each peer has one FIFO per channel, bounded
in frames and bytes:
- `offer()` never waits. When the channel is full it drops the *oldest* frames first: consensus
  messages go stale (an old view's votes), and a peer that missed them recovers by catch-up.
- `put()` waits for room instead. It is for producers that can pause, such as a Narwhal worker
  streaming batches on the DATA channel: backpressure rather than loss.
The writer takes frames by channel priority (HANDSHAKE, CONSENSUS, SYNC, DATA), so a vote never
waits behind megabytes of batch data. The queue wakes nobody itself: `on_ready` (the transport's
"this peer has frames" mark) is called on every append, and the transport decides when to write.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dwcp.consensus.transport.framing import Channel


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_frames: int = 10_000
    max_bytes: int = 16 * 1024 * 1024


_PRIORITY = tuple(Channel)  # IntEnum order is priority order (a tuple: iterating the enum costs ~2 us a take)
DropHook = Callable[[Channel, int], None]  # (channel, frames dropped)
ReadyHook = Callable[[], None]  # frames were queued


class OutboundQueue:
    """Encoded frames waiting for one peer, one bounded FIFO per channel."""

    def __init__(
        self, limits: dict[Channel, QueueLimits] | None = None, on_drop: DropHook | None = None,
        on_ready: ReadyHook | None = None,
    ) -> None:
        self._limits = {ch: (limits or {}).get(ch, QueueLimits()) for ch in Channel}
        self._queues: dict[Channel, deque[bytes]] = {ch: deque() for ch in Channel}
        self._bytes: dict[Channel, int] = dict.fromkeys(Channel, 0)
        self._on_drop = on_drop
        self._on_ready = on_ready
        self._count = 0  # frames queued over all channels (asked after every write: kept, not summed)
        self._room = asyncio.Event()  # pulsed whenever frames leave, to wake put()
        self.dropped: dict[Channel, int] = dict.fromkeys(Channel, 0)

    def __len__(self) -> int:
        return self._count

    def queued_bytes(self, channel: Channel | None = None) -> int:
        return self._bytes[channel] if channel is not None else sum(self._bytes.values())

    def _fits(self, channel: Channel, size: int) -> bool:
        lim = self._limits[channel]
        return len(self._queues[channel]) < lim.max_frames and self._bytes[channel] + size <= lim.max_bytes

    def _append(self, channel: Channel, frame: bytes, ready: bool = True) -> None:
        self._queues[channel].append(frame)
        self._bytes[channel] += len(frame)
        self._count += 1
        if ready and self._on_ready is not None:
            self._on_ready()

    def _drop(self, channel: Channel, count: int) -> None:
        self.dropped[channel] += count
        if self._on_drop is not None:
            self._on_drop(channel, count)

    def offer(self, channel: Channel, frame: bytes, ready: bool = True) -> bool:
        """Queue without waiting, evicting the oldest frames if needed; False when anything was dropped.
        `ready=False`: do not call `on_ready` (the frame waits for the next one that does, or the owner's timer)."""
        if len(frame) > self._limits[channel].max_bytes:
            self._drop(channel, 1)  # could never fit: drop it rather than flush the whole queue
            return False
        queue, evicted = self._queues[channel], 0
        while not self._fits(channel, len(frame)):
            self._bytes[channel] -= len(queue.popleft())
            self._count -= 1
            evicted += 1
        self._append(channel, frame, ready)
        if evicted:
            self._drop(channel, evicted)
        return not evicted

    async def put(self, channel: Channel, frame: bytes) -> None:
        """Queue, waiting while the channel is full (backpressure)."""
        if len(frame) > self._limits[channel].max_bytes:
            raise ValueError(f"frame of {len(frame)} bytes can never fit the {channel.name} queue")
        while not self._fits(channel, len(frame)):
            self._room.clear()
            await self._room.wait()
        self._append(channel, frame)

    def take(self, max_bytes: int = 256 * 1024) -> list[bytes]:
        """Frames to write now, highest-priority channel first, at least one if any, about max_bytes in all."""
        out: list[bytes] = []
        total = 0
        for channel in _PRIORITY:
            queue = self._queues[channel]
            while queue and (not out or total + len(queue[0]) <= max_bytes):
                frame = queue.popleft()
                self._bytes[channel] -= len(frame)
                total += len(frame)
                out.append(frame)
        self._count -= len(out)
        if out:
            self._room.set()
        return out

    def clear(self, channel: Channel) -> int:
        """Discard one channel's frames (e.g. a stale handshake after a reconnect); returns how many."""
        n = len(self._queues[channel])
        self._queues[channel].clear()
        self._bytes[channel] = 0
        self._count -= n
        self._room.set()
        return n


class Backoff:
    """Reconnect delays: exponential from `initial` to `maximum`, with jitter so nodes don't redial in lockstep."""

    def __init__(
        self, initial: float = 0.05, maximum: float = 2.0, factor: float = 2.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("need 0 < initial <= maximum")
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        """Equal jitter: half the exponential step fixed, half random, so the delay never collapses to 0."""
        step = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return step / 2 + self._rng.uniform(0, step / 2)

    def reset(self) -> None:
        self.attempts = 0
