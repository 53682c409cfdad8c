"""Transactions to one consensus cluster, sent as POST /v1/batches: concurrent submissions share a request.

A submission joins the cluster's queue. When fewer than `max_in_flight` batch requests are out, everything
queued goes as one batch at the next event-loop step (so submissions arriving in the same step travel
together); while `max_in_flight` are out, the queue grows and leaves as one batch when one returns. A lone
submission still goes at once, alone; under load batches grow instead of requests multiplying. Each node
then takes one HTTP request and forwards one signed batch to its primary per batch (docs/consensus-
transport.md), and the manager makes one HTTP call per batch.

A batch is one `Dependency.call`: failover to the next node on a connection error, timeout or 5xx, a node
that failed skipped for a while, the cluster's breaker, rate limit, bulkhead and retry budget, exactly as a
single submission. A batch resent to another node after a timeout is harmless: ids are the payloads'
hashes and a node answers `duplicate` for a transaction it already holds, which counts as accepted (the
transaction exists once). Per transaction: `pending`, `committed`, `duplicate` -> accepted; `refused`
(that node's pending pool is full) -> `Unavailable`, a 503 naming the cluster, retried by the client
under its idempotency key. A batch refused whole (4xx) is sent again one submission per request through
POST /v1/transactions, so each gets its own answer and one bad payload cannot fail the others.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from dwcp.manager.dependency import Dependency, Unavailable

MAX_BATCH = 1000  # a node's MAX_BATCH_TXS: transactions per POST /v1/batches


class Rejected(Exception):
    """The dependency refused the request as bad input; carries its status and error body."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.body = status, body


@dataclass
class _Queued:
    payload: bytes
    done: asyncio.Future


class BatchSubmitter:
    def __init__(self, dep: Dependency, client: Callable[[], httpx.AsyncClient], max_in_flight: int = 4,
                 max_batch: int = MAX_BATCH) -> None:
        self.dep, self._client = dep, client
        self.max_in_flight, self.max_batch = max_in_flight, max_batch
        self._queue: list[_Queued] = []
        self._in_flight = 0
        self._flush_due = False
        self.requests = 0  # batch requests sent (an observable for tests and benchmarks)

    async def submit(self, payload: bytes) -> None:
        """Returns once a node accepted the transaction (or already held it); Unavailable or Rejected else."""
        loop = asyncio.get_running_loop()
        item = _Queued(payload, loop.create_future())
        self._queue.append(item)
        self._schedule(loop)
        await item.done

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._queue and not self._flush_due and self._in_flight < self.max_in_flight:
            self._flush_due = True
            loop.call_soon(self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_due = False
        batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
        batch = [q for q in batch if not q.done.done()]  # a caller that went away meanwhile
        if not batch:
            return
        self._in_flight += 1
        loop.create_task(self._send(batch, loop))

    async def _send(self, batch: list[_Queued], loop: asyncio.AbstractEventLoop) -> None:
        try:
            await self._deliver(batch)
        except Exception as exc:  # noqa: BLE001 - every waiter must get an answer, whatever went wrong
            if not isinstance(exc, Unavailable):  # an answer we cannot read (not JSON, wrong shape or count)
                exc = Unavailable(self.dep.name, f"unreadable batch answer: {type(exc).__name__}")
            for q in batch:
                _fail(q.done, exc)
        finally:
            self._in_flight -= 1
            self._schedule(loop)

    async def _deliver(self, batch: list[_Queued]) -> None:
        self.requests += 1
        body = {"payloads": [base64.b64encode(q.payload).decode() for q in batch]}
        url, resp = await self.dep.call(self._client(), "POST", "/v1/batches", json=body)
        if resp.status_code in (200, 202):
            answers = resp.json()["transactions"]
            for q, answer in zip(batch, answers, strict=True):
                if answer["status"] == "refused":
                    _fail(q.done, Unavailable(self.dep.name, f"pending pool full at {url}"))
                elif not q.done.done():
                    q.done.set_result(None)
            return
        # Refused whole (one bad payload, a limit): each on its own, so each gets its own answer.
        await asyncio.gather(*(self._one(q) for q in batch))

    async def _one(self, q: _Queued) -> None:
        try:
            _, resp = await self.dep.call(self._client(), "POST", "/v1/transactions", content=q.payload,
                                          headers={"content-type": "application/octet-stream"})
        except Unavailable as exc:
            _fail(q.done, exc)
            return
        if resp.status_code in (200, 202, 409):  # 409: the cluster already holds it
            if not q.done.done():
                q.done.set_result(None)
        else:
            _fail(q.done, Rejected(resp.status_code, json_body(resp)))


def _fail(done: asyncio.Future, exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)


def json_body(resp: httpx.Response) -> dict:
    try:
        doc = resp.json()
    except ValueError:
        return {"error": {"code": "bad_gateway", "message": resp.text[:200], "field": None}}
    return doc if isinstance(doc, dict) else {"value": doc}
