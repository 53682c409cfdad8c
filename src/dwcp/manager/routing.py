"""Transactions to consensus clusters and allocations to the allocator, through `Dependency` objects.

Clusters: `tpbft`, `probft`, `bullshark`. A cluster is available when its service kind is built in this
version of dwcp and the inventory runs it; one that is not is reported unavailable (503 naming it),
never faked. `auto` chooses by policy (docs/manager.md):

    trust_sensitive                                   -> tpbft     (EigenTrust-weighted group)
    every peer link in the datacenter tier and this
    site's submissions >= high_volume_tx_per_second   -> bullshark (DAG mempool: throughput)
    any peer link in the wan tier                     -> probft    (sampled quorums: fewer WAN messages)
    otherwise                                         -> tpbft

and falls through tpbft, probft, bullshark (in that order) to the first available cluster when its
choice is not available.

Idempotency: a key is bound to the first payload submitted with it (sha256), in SQLite. A retry with the
same key and payload returns the recorded transaction without submitting again (409 if the payload
differs). The record is durable before the answer (`routelog`: group commit). A crash between submitting
and recording is safe too: transaction ids are the payload's hash,
and a cluster refuses a second copy of a pending or committed id, which the router reads as success.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
import time

import httpx

from dwcp.consensus.core.messages import tx_id
from dwcp.manager.dependency import Dependency, Unavailable
from dwcp.manager.links import LinkTable
from dwcp.manager.metrics import ManagerMetrics
from dwcp.manager.routelog import RoutingLog
from dwcp.manager.submitter import BatchSubmitter, Rejected, json_body

CLUSTERS = ("tpbft", "probft", "bullshark")
FALLBACK_ORDER = ("tpbft", "probft", "bullshark")
ABSENT = "unavailable:"  # how /health's detail of a cluster this site cannot route to begins


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different payload."""


class UnknownId(LookupError):
    """No transaction or allocation with this id was routed by this site."""


class Router:
    def __init__(self, clusters: dict[str, Dependency], unbuilt: dict[str, str], allocator: Dependency,
                 log: RoutingLog, links: LinkTable, metrics: ManagerMetrics, timeout: float,
                 high_volume: float, auth: httpx.Auth | None = None, verify: ssl.SSLContext | bool = True) -> None:
        self.clusters, self.unbuilt, self.allocator = clusters, unbuilt, allocator
        self._auth = auth  # each service's bearer token (runtime.auth.client_auth)
        self._verify = verify  # the CAs of services that serve HTTPS (runtime.tls.client_verify)
        self.log, self.links, self.metrics = log, links, metrics
        self.high_volume = high_volume
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._recent: collections.deque[float] = collections.deque()
        self._key_locks: dict[str, asyncio.Lock] = {}
        # Concurrent submissions to a cluster share one POST /v1/batches (manager/submitter.py).
        self._submitters = {name: BatchSubmitter(dep, lambda: self.client) for name, dep in clusters.items()}

    async def start(self) -> None:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(timeout=self._timeout, limits=limits, auth=self._auth,
                                         verify=self._verify)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self.log.close()

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None, "router not started"
        return self._client

    # -- policy ------------------------------------------------------------------------------------
    def submit_rate(self) -> float:
        """This site's transaction submissions per second over the last 10 s."""
        edge = time.monotonic() - 10.0
        while self._recent and self._recent[0] < edge:
            self._recent.popleft()
        return len(self._recent) / 10.0

    def choose(self, requested: str, trust_sensitive: bool) -> str:
        if requested != "auto":
            return requested
        tiers = {link.tier for link in self.links.all() if link.tier}
        if trust_sensitive:
            wanted = "tpbft"
        elif tiers == {"datacenter"} and self.submit_rate() >= self.high_volume:
            wanted = "bullshark"
        elif "wan" in tiers:
            wanted = "probft"
        else:
            wanted = "tpbft"
        if self.available(wanted) is None:
            return wanted
        for name in FALLBACK_ORDER:
            if self.available(name) is None:
                return name
        return wanted

    def available(self, cluster: str) -> str | None:
        """None when `cluster` can take transactions now, else why not."""
        if cluster in self.unbuilt:
            return self.unbuilt[cluster]
        dep = self.clusters[cluster]
        if dep.breaker.refusing():
            return "circuit breaker open"
        return None

    # -- transactions ------------------------------------------------------------------------------
    async def submit(self, payload: bytes, requested: str, idempotency_key: str, trust_sensitive: bool) -> dict:
        payload_sha = hashlib.sha256(payload).hexdigest()
        lock = self._key_locks.setdefault(idempotency_key, asyncio.Lock())
        try:
            async with lock:
                return await self._submit(payload, payload_sha, requested, idempotency_key, trust_sensitive)
        finally:
            if not lock.locked():
                # A request still waiting on this lock finds the recorded key in SQLite; a racing third one
                # with a new lock is harmless too: the cluster refuses a second copy of the same tx id.
                self._key_locks.pop(idempotency_key, None)

    async def _submit(self, payload: bytes, payload_sha: str, requested: str, idempotency_key: str,
                      trust_sensitive: bool) -> dict:
        seen = self.log.idempotent(idempotency_key)
        if seen is not None:
            if seen[0] != payload_sha:
                raise IdempotencyConflict(f"idempotency_key {idempotency_key!r} was used with another payload")
            return {"id": seen[1], "cluster": seen[2], "status": "pending", "replayed": True}
        cluster = self.choose(requested, trust_sensitive)
        if cluster in self.unbuilt:
            raise Unavailable(cluster, self.unbuilt[cluster])
        self._recent.append(time.monotonic())
        tid = tx_id(payload).hex()

        try:
            await self._submitters[cluster].submit(payload)
        except Unavailable:
            self.metrics.routed.labels(cluster, "unavailable").inc()
            raise
        except Rejected:
            self.metrics.routed.labels(cluster, "rejected").inc()
            raise
        # Accepted includes "the cluster already holds this payload" (a retry after a crash, or the same bytes
        # under another key): the transaction exists once, which is what the caller wants.
        await self.log.record_tx(idempotency_key, payload_sha, tid, cluster)  # durable before the answer
        self.metrics.routed.labels(cluster, "accepted").inc()
        return {"id": tid, "cluster": cluster, "status": "pending", "replayed": False}

    async def transaction(self, tid: str) -> dict:
        cluster = self.log.cluster_of(tid)
        if cluster is None:
            raise UnknownId(tid)
        if cluster in self.unbuilt:
            raise Unavailable(cluster, self.unbuilt[cluster])
        dep = self.clusters[cluster]
        status, height = "pending", None
        # A node that has not seen the transaction yet answers 404: ask the others before saying pending.
        for url in dep.order():
            _, resp = await dep.call(self.client, "GET", f"/v1/transactions/{tid}", urls=[url])
            if resp.status_code == 200:
                body = resp.json()
                status, height = body.get("status", "pending"), body.get("height")
                if status == "committed":
                    break
        return {"id": tid, "cluster": cluster, "status": status, "height": height}

    # -- allocations -------------------------------------------------------------------------------
    async def allocate(self, body: dict) -> tuple[int, dict]:
        url, resp = await self.allocator.call(self.client, "POST", "/v1/allocations", json=body)
        doc = json_body(resp)
        if resp.status_code == 201 and isinstance(doc.get("id"), str):
            await asyncio.to_thread(self.log.record_allocation, doc["id"], url)
            doc["allocator"] = url
            self.metrics.routed.labels("allocator", "accepted").inc()
        else:
            self.metrics.routed.labels("allocator", "rejected").inc()
        return resp.status_code, doc

    async def release(self, alloc_id: str) -> tuple[int, dict]:
        url = self.log.allocation_url(alloc_id)
        if url is None:
            raise UnknownId(alloc_id)
        # Only the instance that placed it holds it: no failover to another allocator here.
        _, resp = await self.allocator.call(self.client, "DELETE", f"/v1/allocations/{alloc_id}", urls=[url])
        if resp.status_code in (204, 404):
            await asyncio.to_thread(self.log.forget_allocation, alloc_id)
        return resp.status_code, (json_body(resp) if resp.content else {})
