"""Event-driven replay of a trace through a cluster: the queue, the SLA clock and the cost meter.

Theory of operation. Time jumps from event to event (arrival, departure, SLA deadline). At each instant
departures are processed first, then workloads whose `max_wait` has passed leave the queue as SLA misses,
then the queue is scanned in arrival order: the first workload some host can take right now is a
*decision*, handed to the caller (`next_decision`), which answers with a host (`apply`). A workload no host
could take even when empty is refused at once. Nothing else decides, so every policy sees the same clock.

Cost (what "optimization" is measured on): powered-on core-hours, the time integral of the CPU capacity of
the hosts holding at least one allocation (hosts that must stay powered on), until the last workload leaves.
Weighting by cores makes a big host cost more to keep on than a small one, as power and licences do.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from dwcp.allocator.cluster import ClusterState, HostSpec
from dwcp.allocator.traces import Trace


@dataclass(slots=True)
class Decision:
    """A workload waiting for a host, and which hosts can take it now."""

    index: int  # row in the trace
    demand: np.ndarray
    duration: float
    max_wait: float
    waited: float
    now: float
    feasible: np.ndarray  # bool per host


@dataclass(slots=True)
class Outcome:
    """Totals of one replay."""

    workloads: int = 0
    placed: int = 0
    on_time: int = 0  # placed within max_wait
    missed: int = 0  # left the queue unplaced after max_wait
    refused: int = 0  # larger than every host: refused at once
    active_core_seconds: float = 0.0
    decisions: int = 0

    @property
    def sla_compliance(self) -> float:
        return self.on_time / self.workloads if self.workloads else 1.0

    @property
    def cost_core_hours(self) -> float:
        return self.active_core_seconds / 3600.0


class Simulator:
    """One replay of `trace` on `hosts`; call `next_decision()` / `apply(host)` until it returns None."""

    def __init__(self, hosts: list[HostSpec], trace: Trace) -> None:
        self.hosts = hosts
        self.trace = trace
        self.state = ClusterState(hosts)
        self.now = 0.0
        self.out = Outcome(workloads=len(trace))
        self._next_arrival = 0
        self._queue: list[int] = []  # trace rows waiting, in arrival order
        self._departures: list[tuple[float, str]] = []  # heap of (end time, allocation id)
        self._pending: Decision | None = None
        self.misses_since_last = 0  # SLA misses since the previous decision (for rewards)

    def _advance(self, t: float) -> None:
        if t > self.now:
            self.out.active_core_seconds += float(self.state.capacity[self.state.count > 0, 0].sum()) * (t - self.now)
            self.now = t

    def _next_event_time(self) -> float | None:
        times = []
        if self._next_arrival < len(self.trace):
            times.append(self.trace.arrival[self._next_arrival])
        if self._departures:
            times.append(self._departures[0][0])
        if self._queue:
            times.append(min(self.trace.arrival[i] + self.trace.max_wait[i] for i in self._queue) + 1e-6)
        return min(times) if times else None

    def _settle(self) -> None:
        """Process everything that happens at `now`: departures, arrivals, deadlines."""
        while self._departures and self._departures[0][0] <= self.now:
            _, alloc = heapq.heappop(self._departures)
            self.state.release(alloc)
        tr = self.trace
        while self._next_arrival < len(tr) and tr.arrival[self._next_arrival] <= self.now:
            i = self._next_arrival
            self._next_arrival += 1
            if self.state.fits_anywhere_empty(tr.demand[i]):
                self._queue.append(i)
            else:
                self.out.refused += 1
        keep = []
        for i in self._queue:
            if self.now > tr.arrival[i] + tr.max_wait[i]:
                self.out.missed += 1
                self.misses_since_last += 1
            else:
                keep.append(i)
        self._queue = keep

    def next_decision(self) -> Decision | None:
        """The next workload that can be placed now, advancing time as needed; None when the replay is over."""
        assert self._pending is None, "apply() the previous decision first"
        tr = self.trace
        while True:
            self._settle()
            for i in self._queue:
                feasible = self.state.fits(tr.demand[i])
                if feasible.any():
                    self._pending = Decision(i, tr.demand[i], float(tr.duration[i]), float(tr.max_wait[i]),
                                             self.now - float(tr.arrival[i]), self.now, feasible)
                    return self._pending
            t = self._next_event_time()
            if t is None:
                return None
            self._advance(t)

    def apply(self, host: int) -> float:
        """Place the pending workload on `host`; returns the core-seconds this adds to the cost (see `extension`)."""
        d = self._pending
        assert d is not None, "no pending decision"
        if not d.feasible[host]:
            raise ValueError(f"host {host} cannot take workload {d.index}")
        end = self.now + d.duration
        ext = self.state.extension(host, self.now, end) * float(self.state.capacity[host, 0])
        self.state.place(str(d.index), host, d.demand, end)
        heapq.heappush(self._departures, (end, str(d.index)))
        self._queue.remove(d.index)
        self._pending = None
        self.out.placed += 1
        self.out.on_time += 1  # placement only happens before the deadline (misses leave the queue first)
        self.out.decisions += 1
        self.misses_since_last = 0
        return ext
