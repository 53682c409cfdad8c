"""Virtual time: a priority queue of events ordered by (time, sequence number).

The sequence number breaks ties in scheduling order, so two runs that schedule the same events in
the same order pop them in the same order: with seeded randomness everywhere else, that is what
makes a run a pure function of its seed. Nothing here reads the wall clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Action = Callable[..., None]


class Clock:
    """`now` only moves forward, to the time of the event being run."""

    __slots__ = ("now", "_queue", "_seq", "events_run")

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Action, tuple[Any, ...]]] = []
        self._seq = 0
        self.events_run = 0

    def at(self, when: float, action: Action, *args: Any) -> None:
        """Run `action(*args)` at virtual time `when` (never earlier than now)."""
        self._seq += 1
        now = self.now
        heapq.heappush(self._queue, (when if when > now else now, self._seq, action, args))

    def after(self, delay: float, action: Action, *args: Any) -> None:
        self.at(self.now + delay, action, *args)

    def run_until(self, end: float) -> None:
        """Run every event scheduled at or before `end`, then leave `now` at `end`."""
        queue = self._queue
        pop = heapq.heappop
        while queue and queue[0][0] <= end:
            when, _, action, args = pop(queue)
            self.now = when
            self.events_run += 1
            action(*args)
        self.now = max(self.now, end)

    def __len__(self) -> int:
        return len(self._queue)
