"""One HTTP dependency of the manager (a consensus cluster, the allocator): its instances, a breaker, a
rate limit and bulkhead, a retry budget, and failover from one instance to the next.

A call goes to the next instance in turn; a connection error, timeout or 5xx answer fails over to the
following instance (jittered backoff, while the retry budget allows), up to every instance once. An
instance that failed is skipped for `cooldown` seconds. Only when every try failed does the breaker
count a failure, so one dead node of a healthy cluster does not open the cluster's breaker.

A write that may have taken effect before its instance failed (a timeout after a node accepted a
transaction) is sent again to the next instance; transaction submissions are safe to resend (a node
answers `duplicate` for a transaction it holds: manager/submitter.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx

from dwcp.runtime.breaker import CircuitBreaker
from dwcp.runtime.resilience import Guard, Refused, RetryBudget, backoff


class Unavailable(Exception):
    """The dependency cannot take the call now; `reason` says why (for a 503 that names the dependency)."""

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency} unavailable: {reason}")
        self.dependency = dependency
        self.reason = reason


@dataclass
class Dependency:
    name: str
    urls: list[str]
    breaker: CircuitBreaker
    guard: Guard
    budget: RetryBudget
    cooldown: float = 5.0
    _next: int = 0
    _failed_at: dict[str, float] = field(default_factory=dict)

    def order(self) -> list[str]:
        """Instances to try, starting at the next in turn, recently failed ones last."""
        n = len(self.urls)
        start, self._next = self._next, self._next + 1
        ring = [self.urls[(start + i) % n] for i in range(n)]
        now = time.monotonic()
        fresh = [u for u in ring if now - self._failed_at.get(u, -1e9) >= self.cooldown]
        return fresh + [u for u in ring if u not in fresh]

    async def call(self, client: httpx.AsyncClient, method: str, path: str, *, urls: list[str] | None = None,
                   **kwargs) -> tuple[str, httpx.Response]:
        """(instance URL, its answer below 500), or Unavailable after every try failed."""
        if not self.urls:
            raise Unavailable(self.name, "no instances in the inventory")
        try:
            entered = self.guard.enter()
        except Refused as exc:
            raise Unavailable(self.name, exc.why) from None
        last = "no answer"
        with entered:
            if not self.breaker.allow():
                raise Unavailable(self.name, f"circuit breaker open, retry in {self.breaker.retry_in():.1f}s")
            self.budget.record_call()
            for attempt, url in enumerate(urls or self.order()):
                if attempt:
                    if not self.budget.try_retry():
                        last += "; retry budget spent"
                        break
                    await asyncio.sleep(backoff(attempt - 1, base=0.01, cap=0.2))
                try:
                    resp = await client.request(method, f"{url}{path}", **kwargs)
                except httpx.HTTPError as exc:
                    last = f"{url}: {type(exc).__name__}"
                    self._failed_at[url] = time.monotonic()
                    continue
                if resp.status_code >= 500:
                    last = f"{url}: HTTP {resp.status_code}"
                    self._failed_at[url] = time.monotonic()
                    continue
                self._failed_at.pop(url, None)
                self.breaker.record_success()
                return url, resp
        self.breaker.record_failure()
        raise Unavailable(self.name, last)
