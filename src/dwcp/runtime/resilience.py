"""Per-dependency protection beside the circuit breaker: a retry budget with jittered backoff, a rate
limit and a bulkhead, so one slow or failing dependency cannot use up the caller's capacity.

- `RetryBudget`: retries may add at most `ratio` of the calls made (plus `min_per_second` so a quiet
  caller can still retry); past that a failure is final instead of multiplying load on a sick dependency.
- `backoff(attempt)`: full jitter (a uniform delay up to base x 2^attempt, capped), so retrying
  clients spread out instead of arriving together.
- `RateLimit`: a token bucket of `rate` calls per second with `burst` capacity.
- `Bulkhead`: at most `limit` calls in flight; the next one is refused at once rather than queued.

All are thread-safe and take an injectable clock.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable


class Refused(RuntimeError):
    """A call not made: the dependency's rate limit or bulkhead is full."""

    def __init__(self, dependency: str, why: str) -> None:
        super().__init__(f"{dependency}: {why}")
        self.dependency = dependency
        self.why = why


def backoff(attempt: int, base: float = 0.05, cap: float = 5.0, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based): full jitter."""
    return (rng or random).uniform(0.0, min(cap, base * (2 ** attempt)))


class RetryBudget:
    def __init__(self, ratio: float = 0.2, min_per_second: float = 10.0, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio, self.min_per_second, self.window = ratio, min_per_second, window
        self._clock = clock
        self._calls: list[float] = []
        self._retries: list[float] = []
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        edge = now - self.window
        while self._calls and self._calls[0] < edge:
            self._calls.pop(0)
        while self._retries and self._retries[0] < edge:
            self._retries.pop(0)

    def record_call(self) -> None:
        with self._lock:
            now = self._clock()
            self._trim(now)
            self._calls.append(now)

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            allowed = self.ratio * len(self._calls) + self.min_per_second * self.window
            if len(self._retries) >= allowed:
                return False
            self._retries.append(now)
            return True


class RateLimit:
    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._clock = clock
        self._at = clock()
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


class Bulkhead:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class Guard:
    """One dependency's rate limit and bulkhead together: `with guard.enter(): call()` or Refused."""

    def __init__(self, name: str, rate: float, concurrency: int) -> None:
        self.name = name
        self.rate = RateLimit(rate)
        self.bulkhead = Bulkhead(concurrency)

    def enter(self) -> _Entered:
        if not self.rate.try_acquire():
            raise Refused(self.name, f"over its rate limit of {self.rate.rate:g} calls/s")
        if not self.bulkhead.try_enter():
            raise Refused(self.name, f"{self.bulkhead.limit} calls already in flight")
        return _Entered(self.bulkhead)


class _Entered:
    def __init__(self, bulkhead: Bulkhead) -> None:
        self._bulkhead = bulkhead

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self._bulkhead.leave()
