"""Circuit breaker: stop calling a dependency that keeps failing, probe it again after a pause.

States and moves (the whole state machine; `CircuitBreaker` only looks them up):

    CLOSED    --failure_threshold consecutive failures-->  OPEN
    OPEN      --open_seconds elapsed, next call-->         HALF_OPEN
    HALF_OPEN --success_threshold successes-->             CLOSED
    HALF_OPEN --any failure-->                             OPEN

While OPEN every call is refused at once (`CircuitOpenError`) instead of waiting on a dead peer; in
HALF_OPEN at most `half_open_max_calls` probes run at a time.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily
from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerConfig(BaseModel):
    """Thresholds, set per service in the inventory."""

    model_config = ConfigDict(extra="forbid")
    failure_threshold: int = Field(5, ge=1, description="consecutive failures that open the breaker")
    open_seconds: float = Field(10.0, gt=0, description="how long to refuse calls before probing")
    success_threshold: int = Field(2, ge=1, description="half-open successes that close it again")
    half_open_max_calls: int = Field(1, ge=1, description="concurrent probes allowed while half-open")


class CircuitOpenError(RuntimeError):
    """Raised instead of calling the dependency while the breaker is open."""

    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open; retry in {retry_in:.1f}s")
        self.name = name
        self.retry_in = retry_in


class BreakerMetrics:
    """`dwcp_circuit_breaker_state` (1 for the current state), its transitions counter, and the seconds
    spent in each state, `dwcp_circuit_breaker_state_seconds_total` (so "closed 99.9% of the time" is
    closed seconds over all seconds, one PromQL ratio of increases)."""

    def __init__(self, registry: CollectorRegistry, service: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self._clock = clock
        self._lock = threading.Lock()
        # breaker -> [current state, since when, {state: seconds accumulated}]
        self._time_in_state: dict[str, list] = {}
        registry.register(_TimeInState(self))
        self.state = Gauge(
            "dwcp_circuit_breaker_state",
            "1 for the breaker's current state (closed, open, half_open), 0 for the others.",
            ["service", "breaker", "state"], registry=registry,
        )
        self.transitions = Counter(
            "dwcp_circuit_breaker_transitions_total", "Breaker state changes, by from and to state.",
            ["service", "breaker", "from_state", "to_state"], registry=registry,
        )

    def show(self, breaker: str, current: BreakerState) -> None:
        for s in BreakerState:
            self.state.labels(self.service, breaker, s.value).set(1 if s is current else 0)
        now = self._clock()
        with self._lock:
            entry = self._time_in_state.get(breaker)
            if entry is None:
                self._time_in_state[breaker] = [current, now, {s: 0.0 for s in BreakerState}]
            else:
                entry[2][entry[0]] += now - entry[1]
                entry[0], entry[1] = current, now

    def seconds_in_state(self) -> dict[str, dict[BreakerState, float]]:
        """Per breaker, seconds spent in each state up to now."""
        now = self._clock()
        with self._lock:
            out = {}
            for name, (current, since, totals) in self._time_in_state.items():
                out[name] = dict(totals)
                out[name][current] += now - since
            return out


class _TimeInState:
    """Collector for the time-in-state counter: computed at scrape time, so it never lags a transition."""

    def __init__(self, metrics: BreakerMetrics) -> None:
        self._metrics = metrics

    def collect(self):
        family = CounterMetricFamily(
            "dwcp_circuit_breaker_state_seconds", "Seconds each breaker has spent in each state.",
            labels=["service", "breaker", "state"])
        for name, totals in self._metrics.seconds_in_state().items():
            for state, seconds in totals.items():
                family.add_metric([self._metrics.service, name, state.value], seconds)
        yield family


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        metrics: BreakerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._metrics = metrics
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self._probes = 0
        self._lock = threading.RLock()  # callers on several threads (transfer streams) share a breaker
        if metrics:
            metrics.show(name, self.state)

    def _move(self, to: BreakerState) -> None:
        if to is self.state:
            return
        if self._metrics:
            self._metrics.transitions.labels(self._metrics.service, self.name, self.state.value, to.value).inc()
            self._metrics.show(self.name, to)
        self.state = to
        self._failures = self._successes = self._probes = 0
        if to is BreakerState.OPEN:
            self._opened_at = self._clock()

    def allow(self) -> bool:
        """Whether a call may go ahead now; a True in HALF_OPEN reserves a probe slot."""
        with self._lock:
            return self._allow()

    def _allow(self) -> bool:
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.config.open_seconds:
                return False
            self._move(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self._probes >= self.config.half_open_max_calls:
                return False
            self._probes += 1
        return True

    def record_success(self) -> None:
        with self._lock:
            self._record_success()

    def _record_success(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            self._successes += 1
            if self._successes >= self.config.success_threshold:
                self._move(BreakerState.CLOSED)
        else:
            self._failures = 0

    def record_failure(self) -> None:
        with self._lock:
            self._record_failure()

    def _record_failure(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._move(BreakerState.OPEN)
        elif self.state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.config.failure_threshold:
                self._move(BreakerState.OPEN)

    def refusing(self) -> bool:
        """Whether a call now would be refused because the breaker is open (a look: reserves no probe)."""
        with self._lock:
            return self.state is BreakerState.OPEN and self._clock() - self._opened_at < self.config.open_seconds

    def retry_in(self) -> float:
        return max(0.0, self.config.open_seconds - (self._clock() - self._opened_at))

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` through the breaker: refused while open, outcome recorded otherwise."""
        if not self.allow():
            raise CircuitOpenError(self.name, self.retry_in())
        try:
            result = await fn()
        except Exception:
            self.record_failure()
            raise
        self.record_success()
        return result
