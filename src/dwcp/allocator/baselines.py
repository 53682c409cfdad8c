"""The heuristics MADDPG is measured against, on exactly the same `choose(state, decision)` interface.

All four only ever pick a feasible host (`decision.feasible`), so none can overcommit; ties go to the
lowest host index so results are reproducible.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from dwcp.allocator.cluster import ClusterState
from dwcp.allocator.sim import Decision


class Policy(Protocol):
    name: str

    def choose(self, state: ClusterState, decision: Decision) -> int: ...


class RoundRobin:
    """The next feasible host after the last one used, cyclically: spreads load over every host."""

    name = "round-robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, state: ClusterState, decision: Decision) -> int:
        n = len(decision.feasible)
        order = (np.arange(n) + self._next) % n
        host = int(order[np.argmax(decision.feasible[order])])
        self._next = (host + 1) % n
        return host


class FirstFit:
    """The lowest-indexed feasible host."""

    name = "first-fit"

    def choose(self, state: ClusterState, decision: Decision) -> int:
        return int(np.argmax(decision.feasible))


class BestFit:
    """The feasible host with the least capacity left after placement (sum of per-resource fractions)."""

    name = "best-fit"

    def choose(self, state: ClusterState, decision: Decision) -> int:
        left = ((state.capacity - state.used - decision.demand) / state.capacity).sum(axis=1)
        left[~decision.feasible] = np.inf
        return int(np.argmin(left))


class RandomFit:
    """A uniformly random feasible host (seeded)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def choose(self, state: ClusterState, decision: Decision) -> int:
        return int(self._rng.choice(np.flatnonzero(decision.feasible)))


BASELINES = {"round-robin": RoundRobin, "first-fit": FirstFit, "best-fit": BestFit, "random": RandomFit}


def make_baseline(name: str, seed: int = 0) -> Policy:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return RandomFit(seed) if name == "random" else BASELINES[name]()
