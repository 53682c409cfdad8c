"""How late the event loop runs a callback: the stall every request on that loop waits behind.

A request's latency measured inside the app (`dwcp_request_duration_seconds`) starts when the app is
called, so it cannot see the time the request's bytes waited for the loop (a blocking call in a handler,
a long callback, the GIL held by another thread). `LoopLag` schedules a callback every `interval`
seconds and records how late it ran: its histogram is that waiting, as any request would have felt it.

The interval is 250 ms (`INTERVAL`): each sample wakes an idle process once, and at 50 ms the sampler
alone cost an idle process 1.3 ms of CPU a second (0.37 ms at 250 ms; measured with uvloop on the 2-CPU
VM, issue 12), in every service and each of a consensus cluster's nodes. A stall is caught with the
same odds per second of stall at any interval; a shorter one only takes more samples of an idle loop.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Histogram

__all__ = ["INTERVAL", "LAG_BUCKETS", "LoopLag"]

INTERVAL = 0.25  # seconds between samples
LAG_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class LoopLag:
    """Samples the running loop's lateness every `interval` seconds into `dwcp_event_loop_lag_seconds`."""

    def __init__(self, registry: CollectorRegistry, service: str, interval: float = INTERVAL,
                 clock=time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.histogram = Histogram(
            "dwcp_event_loop_lag_seconds", "How late the HTTP event loop ran a callback scheduled every "
            f"{interval:g} s: what a request arriving then waited before any handler ran.",
            ["service"], buckets=LAG_BUCKETS, registry=registry).labels(service)
        self.max_seconds = 0.0  # the worst lag seen since start
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = self.clock() + self.interval
        self._handle = loop.call_at(loop.time() + self.interval, self._tick, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = self.clock()
        lag = max(0.0, now - self._due)
        self.histogram.observe(lag)
        self.max_seconds = max(self.max_seconds, lag)
        self._due = now + self.interval
        self._handle = loop.call_at(loop.time() + self.interval, self._tick, loop)
