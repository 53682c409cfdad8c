"""The trained MADDPG policy as a placement policy: numpy actors, no torch on the decision path.

Each agent's actor scores its own group's hosts; `joint_choice` picks the placement. At evaluation the
actors are deterministic (softmax of the logits, no Gumbel noise), as MADDPG's execution phase is.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from dwcp.allocator.cluster import ClusterState
from dwcp.allocator.features import groups_of, host_features, job_features
from dwcp.allocator.networks import NumpyActors, joint_choice, softmax
from dwcp.allocator.sim import Decision


def default_checkpoint() -> Path:
    """The committed checkpoint (actors only, ~60 KB), shipped as package data."""
    return Path(str(resources.files("dwcp.allocator").joinpath("data/maddpg_actors.pt")))


class MaddpgPolicy:
    name = "maddpg"

    def __init__(self, checkpoint: Path | str | None = None) -> None:
        from dwcp.allocator.maddpg import load_checkpoint  # torch only at load time

        ck = load_checkpoint(checkpoint or default_checkpoint())
        self.n_agents = int(ck["config"]["n_agents"])
        self.actors = NumpyActors([ck[f"actor_{i}"] for i in range(self.n_agents)])
        self._index = np.zeros((self.n_agents, 0), dtype=np.int64)  # (agents, group size): host indices
        self._valid = np.zeros((self.n_agents, 0), dtype=bool)  # False on padding
        self._n_hosts = -1

    def _regroup(self, state: ClusterState) -> None:
        groups = groups_of(state, self.n_agents)
        size = max(1, max(len(g) for g in groups))
        self._index = np.zeros((self.n_agents, size), dtype=np.int64)
        self._valid = np.zeros((self.n_agents, size), dtype=bool)
        for i, g in enumerate(groups):
            self._index[i, : len(g)], self._valid[i, : len(g)] = g, True
        self._n_hosts = state.n_hosts

    def choose(self, state: ClusterState, decision: Decision) -> int:
        if state.n_hosts != self._n_hosts:  # hosts registered since the last call: regroup
            self._regroup(state)
        job = job_features(state, decision.demand, decision.duration, decision.waited, decision.max_wait)
        hf = host_features(state, decision.demand, decision.duration, decision.now)
        mask = decision.feasible[self._index] & self._valid
        probs = softmax(self.actors.logits(job, hf[self._index], mask))
        choice = joint_choice(probs, mask)
        assert choice is not None, "choose() needs at least one feasible host"
        agent, h = choice
        return int(self._index[agent, h])
