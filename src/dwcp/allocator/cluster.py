"""Hosts, their capacities and what is placed on them: the one state every policy, the simulator and the service share.

Two invariants hold after every method returns, and `check()` asserts them (tests call it after each step):
no host is ever overcommitted (`used <= capacity` in every dimension), and `used` is exactly the sum of the
demands of the allocations on the host, so a release gives back precisely what the placement took.

Resources are the vector (cpu cores, memory GiB, network Mbit/s), in that order, everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESOURCES = ("cpu", "mem", "net")
# Float slack for the capacity test: demands are decimals from JSON/CSV and sums of them drift.
_EPS = 1e-9


class CapacityError(ValueError):
    """A placement that would overcommit a host, or a release of something not placed: a caller bug."""


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One host: its name, capacity vector and the agent (host group) that decides for it."""

    name: str
    cpu: float
    mem: float
    net: float
    group: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("host name must not be empty")
        if min(self.cpu, self.mem, self.net) <= 0:
            raise ValueError(f"host {self.name}: capacities must be positive")
        if self.group < 0:
            raise ValueError(f"host {self.name}: group must be >= 0")

    @property
    def capacity(self) -> np.ndarray:
        return np.array([self.cpu, self.mem, self.net], dtype=np.float64)


# The default cluster: 16 hosts in 4 groups of different shapes (one agent per group). Sizes are common
# cloud shapes; mixing them is what makes placement matter (a 16-core job fits only some hosts well).
_DEFAULT_SHAPES = ((32, 128, 10_000), (64, 256, 25_000), (16, 64, 10_000), (48, 192, 25_000))


def default_cluster(hosts_per_group: int = 4) -> list[HostSpec]:
    return [
        HostSpec(f"g{g}-h{i}", float(c), float(m), float(n), group=g)
        for g, (c, m, n) in enumerate(_DEFAULT_SHAPES)
        for i in range(hosts_per_group)
    ]


def load_cluster(path: Path | str | None) -> list[HostSpec]:
    """A cluster file is JSON: `{"hosts": [{"name", "cpu", "mem", "net", "group"}, ...]}`; None → the default."""
    if path is None:
        return default_cluster()
    data = json.loads(Path(path).read_text())
    hosts = [HostSpec(str(h["name"]), float(h["cpu"]), float(h["mem"]), float(h["net"]), int(h.get("group", 0)))
             for h in data["hosts"]]
    if len({h.name for h in hosts}) != len(hosts):
        raise ValueError(f"{path}: host names must be unique")
    if not hosts:
        raise ValueError(f"{path}: no hosts")
    return hosts


def save_cluster(hosts: list[HostSpec], path: Path | str) -> None:
    rows = [{"name": h.name, "cpu": h.cpu, "mem": h.mem, "net": h.net, "group": h.group} for h in hosts]
    Path(path).write_text(json.dumps({"hosts": rows}, indent=1))


class ClusterState:
    """Capacity and usage of every host, plus each allocation's host, demand and end time."""

    def __init__(self, hosts: list[HostSpec]) -> None:
        self.hosts: list[HostSpec] = []
        self.capacity = np.zeros((0, 3))
        self.used = np.zeros((0, 3))
        self.count = np.zeros(0, dtype=np.int64)
        self.group = np.zeros(0, dtype=np.int64)
        self.allocs: dict[str, tuple[int, np.ndarray, float]] = {}  # id -> (host index, demand, end time)
        self._ends: list[dict[str, float]] = []  # per host: id -> end time, for drain times
        self.index: dict[str, int] = {}
        for h in hosts:
            self.add_host(h)

    def add_host(self, host: HostSpec) -> int:
        if host.name in self.index:
            raise ValueError(f"host {host.name!r} already exists")
        self.index[host.name] = len(self.hosts)
        self.hosts.append(host)
        self.capacity = np.vstack([self.capacity, host.capacity])
        self.used = np.vstack([self.used, np.zeros(3)])
        self.count = np.append(self.count, 0)
        self.group = np.append(self.group, host.group)
        self._ends.append({})
        return len(self.hosts) - 1

    @property
    def n_hosts(self) -> int:
        return len(self.hosts)

    def fits(self, demand: np.ndarray) -> np.ndarray:
        """Boolean mask of hosts with room for `demand` right now."""
        return np.all(self.used + demand <= self.capacity + _EPS, axis=1)

    def fits_anywhere_empty(self, demand: np.ndarray) -> bool:
        """Whether some host could take `demand` at all (when empty): false means refuse, never wait."""
        return bool(np.any(np.all(demand <= self.capacity + _EPS, axis=1)))

    def active(self) -> np.ndarray:
        """Hosts with at least one allocation: the ones that must be powered on."""
        return self.count > 0

    def drain_time(self, host: int) -> float:
        """When the host would be empty if nothing else were placed (0 when it is empty already)."""
        ends = self._ends[host]
        return max(ends.values()) if ends else 0.0

    def drain_times(self) -> np.ndarray:
        return np.array([max(e.values()) if e else 0.0 for e in self._ends])

    def extension(self, host: int, now: float, end: float) -> float:
        """Host-seconds this placement adds to the host's busy period, if nothing else changes.

        Summed over all placements this is exactly the measure of the union of each host's busy intervals,
        i.e. the active host-time cost, so it is a decomposition of the cost, not a heuristic.
        """
        busy_until = max(self.drain_time(host), now) if self.count[host] else now
        return max(0.0, end - busy_until)

    def place(self, alloc_id: str, host: int, demand: np.ndarray, end: float) -> None:
        if alloc_id in self.allocs:
            raise CapacityError(f"allocation {alloc_id!r} is already placed")
        if not np.all(self.used[host] + demand <= self.capacity[host] + _EPS):
            raise CapacityError(f"host {self.hosts[host].name} has no room for {demand.tolist()}")
        self.used[host] += demand
        self.count[host] += 1
        self.allocs[alloc_id] = (host, demand.copy(), end)
        self._ends[host][alloc_id] = end

    def release(self, alloc_id: str) -> int:
        """Give back exactly what the placement took; returns the host index."""
        if alloc_id not in self.allocs:
            raise CapacityError(f"allocation {alloc_id!r} is not placed")
        host, demand, _ = self.allocs.pop(alloc_id)
        del self._ends[host][alloc_id]
        self.count[host] -= 1
        # Recompute from the remaining allocations instead of subtracting, so float error cannot accumulate.
        if self.count[host] == 0:
            self.used[host] = 0.0
        else:
            self.used[host] -= demand
            np.maximum(self.used[host], 0.0, out=self.used[host])
        return host

    def check(self) -> None:
        """Assert both invariants (tests call this after every step)."""
        assert np.all(self.used <= self.capacity + 1e-6), "overcommitted host"
        sums = np.zeros_like(self.used)
        counts = np.zeros_like(self.count)
        for host, demand, _ in self.allocs.values():
            sums[host] += demand
            counts[host] += 1
        assert np.allclose(sums, self.used, atol=1e-6), "used != sum of placed demands"
        assert np.array_equal(counts, self.count), "allocation count mismatch"
