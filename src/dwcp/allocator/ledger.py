"""The service's state machine: a live cluster run by the configured policy, and the same requests replayed
in shadow through the baseline, with the cost meters of both. No I/O besides the store, no clock (time
arrives as `now`), no metrics (the service reads `snapshot()`).

Each request: expire what has ended, advance both cost meters to `now`, check, decide, write the store,
then change memory. Refusal = no host has room now (the request's SLA is missed; the service does not queue).
"""

from __future__ import annotations

import heapq
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from dwcp.allocator.baselines import Policy
from dwcp.allocator.cluster import ClusterState, HostSpec
from dwcp.allocator.sim import Decision
from dwcp.allocator.store import Store, StoredAllocation


class LedgerError(Exception):
    """Bad request against the current state: status, code, message, field (mapped to ApiError)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


@dataclass(frozen=True, slots=True)
class Placement:
    id: str
    host: str | None  # None: refused
    start: float
    end: float
    inference_s: float


ENDED_REMEMBERED = 100_000  # ids of ended allocations kept for idempotent DELETEs (~10 MB)
_COUNTERS = ("total", "successful", "live_cost", "shadow_cost", "shadow_placed", "clock")


class Ledger:
    def __init__(self, store: Store, policy: Policy, shadow: Policy, now: float) -> None:
        self.store, self.policy, self.shadow_policy = store, policy, shadow
        hosts = store.hosts()
        self.live, self.shadow = ClusterState(hosts), ClusterState(hosts)
        self.c = {k: 0.0 for k in _COUNTERS} | store.counters()
        self.c["clock"] = self.c["clock"] or now
        self.meta: dict[str, StoredAllocation] = {}
        self._ends: list[tuple[float, str]] = []
        for a in store.allocations():
            self.live.place(a.id, self.live.index[a.host], np.array(a.demand), a.end)
            if a.shadow_host is not None:
                self.shadow.place(a.id, self.shadow.index[a.shadow_host], np.array(a.demand), a.end)
            self.meta[a.id] = a
            heapq.heappush(self._ends, (a.end, a.id))
        self.shadow_only: dict[str, float] = {}
        # Allocations that ended (expired or released) recently, so a late DELETE of one is a no-op, not a 404.
        self.ended: OrderedDict[str, None] = OrderedDict()
        for i, host, d, end in store.shadow_only():
            self.shadow.place(i, self.shadow.index[host], np.array(d), end)
            self.shadow_only[i] = end
            heapq.heappush(self._ends, (end, i))

    # -- time -------------------------------------------------------------------------------------------
    def _powered(self, st: ClusterState) -> float:
        return float(st.capacity[st.count > 0, 0].sum()) if st.n_hosts else 0.0

    def _meter(self, t: float) -> None:
        dt = t - self.c["clock"]
        if dt > 0:
            self.c["live_cost"] += self._powered(self.live) * dt
            self.c["shadow_cost"] += self._powered(self.shadow) * dt
            self.c["clock"] = t

    def _expire(self, now: float) -> None:
        """Release (in end order, metering between) everything whose duration has run out."""
        gone, gone_shadow = [], []
        while self._ends and self._ends[0][0] <= now:
            end, i = heapq.heappop(self._ends)
            self._meter(end)
            if i in self.meta:
                self._drop(i)
                gone.append(i)
            elif i in self.shadow_only:
                self.shadow.release(i)
                del self.shadow_only[i]
                gone_shadow.append(i)
        self._meter(now)
        if gone or gone_shadow:
            self.store.record(self.counters(), remove=gone, remove_shadow_only=gone_shadow)

    def _drop(self, i: str) -> None:
        self.live.release(i)
        if i in self.shadow.allocs:
            self.shadow.release(i)
        del self.meta[i]
        self.ended[i] = None
        if len(self.ended) > ENDED_REMEMBERED:
            self.ended.popitem(last=False)

    def counters(self) -> dict[str, float]:
        return dict(self.c)

    # -- requests -------------------------------------------------------------------------------------------
    def add_host(self, host: HostSpec, now: float) -> None:
        self._expire(now)
        if host.name in self.live.index:
            raise LedgerError(409, "host_exists", f"host {host.name!r} is already registered", "name")
        self.store.add_host(host)
        self.live.add_host(host)
        self.shadow.add_host(host)

    def allocate(self, demand: np.ndarray, duration: float, max_wait: float, now: float,
                 host: str | None = None) -> Placement:
        self._expire(now)
        if self.live.n_hosts == 0:
            raise LedgerError(409, "no_hosts", "no hosts are registered; POST /v1/hosts first")
        if host is not None and host not in self.live.index:
            raise LedgerError(409, "unknown_host", f"host {host!r} is not registered", "host")
        if not self.live.fits_anywhere_empty(demand):  # a valid demand this cluster cannot hold: a state conflict
            raise LedgerError(409, "demand_exceeds_capacity",
                              f"demand {demand.tolist()} is larger than every registered host", "demand")
        aid = uuid.uuid4().hex
        end = now + duration
        feasible = self.live.fits(demand)
        if host is not None:  # pinned: only that host may take it
            pinned = np.zeros_like(feasible)
            pinned[self.live.index[host]] = feasible[self.live.index[host]]
            feasible = pinned
        d = Decision(-1, demand, duration, max_wait, 0.0, now, feasible)
        t0 = time.perf_counter()
        live_host = self.policy.choose(self.live, d) if feasible.any() else None
        inference = time.perf_counter() - t0 if feasible.any() else 0.0
        sfeas = self.shadow.fits(demand) if host is None else feasible & self.shadow.fits(demand)
        shadow_host = self.shadow_policy.choose(self.shadow, Decision(-1, demand, duration, max_wait, 0.0, now,
                                                                      sfeas)) if sfeas.any() else None
        c = dict(self.c)
        c["total"] += 1
        c["shadow_placed"] += shadow_host is not None
        shadow_name = self.shadow.hosts[shadow_host].name if shadow_host is not None else None
        if live_host is None:
            only = (aid, shadow_name, tuple(demand.tolist()), end) if shadow_name else None
            self.store.record(c, add_shadow_only=only)
            self.c = c
            if shadow_host is not None:
                self.shadow.place(aid, shadow_host, demand, end)
                self.shadow_only[aid] = end
                heapq.heappush(self._ends, (end, aid))
            return Placement(aid, None, now, end, inference)
        c["successful"] += 1
        rec = StoredAllocation(aid, self.live.hosts[live_host].name, tuple(demand.tolist()), now, end, max_wait,
                               shadow_name)
        self.store.record(c, add=rec)
        self.c = c
        self.live.place(aid, live_host, demand, end)
        if shadow_host is not None:
            self.shadow.place(aid, shadow_host, demand, end)
        self.meta[aid] = rec
        heapq.heappush(self._ends, (end, aid))
        return Placement(aid, rec.host, now, end, inference)

    def release(self, aid: str, now: float) -> StoredAllocation | None:
        """End an allocation early; None if it had already ended (expired or released): releasing is idempotent."""
        self._expire(now)
        rec = self.meta.get(aid)
        if rec is None and aid in self.ended:
            return None
        if rec is None:
            raise LedgerError(404, "unknown_allocation", "no such allocation (never issued here, or ended before "
                              "this instance's last restart)", "alloc_id")
        self.store.record(self.counters(), remove=[aid])
        self._drop(aid)
        return rec

    def refresh(self, now: float) -> None:
        self._expire(now)

    # -- read-only views ---------------------------------------------------------------------------------
    @property
    def optimization_pct(self) -> float:
        return 100.0 * (1.0 - self.c["live_cost"] / self.c["shadow_cost"]) if self.c["shadow_cost"] > 0 else 0.0

    @property
    def sla_compliance(self) -> float:
        return self.c["successful"] / self.c["total"] if self.c["total"] else 1.0

    @property
    def shadow_sla_compliance(self) -> float:
        return self.c["shadow_placed"] / self.c["total"] if self.c["total"] else 1.0

    def cluster_view(self) -> dict:
        st = self.live
        hosts = [{
            "name": h.name, "group": h.group, "capacity": {"cpu": h.cpu, "mem": h.mem, "net": h.net},
            "used": dict(zip(("cpu", "mem", "net"), (round(float(x), 6) for x in st.used[i]), strict=True)),
            "allocations": int(st.count[i]),
        } for i, h in enumerate(st.hosts)]
        return {
            "policy": self.policy.name, "shadow_policy": self.shadow_policy.name, "hosts": hosts,
            "active_allocations": len(self.meta), "powered_on_hosts": int((st.count > 0).sum()),
            "decisions": int(self.c["total"]), "placed": int(self.c["successful"]),
            "sla_compliance": round(self.sla_compliance, 6),
            "shadow_sla_compliance": round(self.shadow_sla_compliance, 6),
            "cost_core_hours": round(self.c["live_cost"] / 3600, 6),
            "shadow_cost_core_hours": round(self.c["shadow_cost"] / 3600, 6),
            "optimization_pct": round(self.optimization_pct, 4),
        }
