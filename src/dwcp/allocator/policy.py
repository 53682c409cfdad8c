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
from dwcp.allocator.networks import NumpyActor, joint_choice, softmax
from dwcp.allocator.sim import Decision


def default_checkpoint() -> Path:
    """The committed checkpoint (actors only, ~30 KB), shipped as package data."""
    return Path(str(resources.files("dwcp.allocator").joinpath("data/maddpg_actors.pt")))


class MaddpgPolicy:
    name = "maddpg"

    def __init__(self, checkpoint: Path | str | None = None) -> None:
        from dwcp.allocator.maddpg import load_checkpoint  # torch only at load time

        ck = load_checkpoint(checkpoint or default_checkpoint())
        self.n_agents = int(ck["config"]["n_agents"])
        self.actors = [NumpyActor(ck[f"actor_{i}"]) for i in range(self.n_agents)]
        self._groups: list[np.ndarray] | None = None
        self._n_hosts = -1

    def choose(self, state: ClusterState, decision: Decision) -> int:
        if state.n_hosts != self._n_hosts:  # hosts registered since the last call: regroup
            self._groups, self._n_hosts = groups_of(state, self.n_agents), state.n_hosts
        job = job_features(state, decision.demand, decision.duration, decision.waited, decision.max_wait)
        hf = host_features(state, decision.demand, decision.duration, decision.now)
        actions, masks = [], []
        for actor, idx in zip(self.actors, self._groups, strict=True):
            m = decision.feasible[idx]
            masks.append(m)
            actions.append(softmax(actor.logits(job, hf[idx], m)) if m.any() else np.zeros(len(idx) + 1))
        choice = joint_choice(actions, masks)
        assert choice is not None, "choose() needs at least one feasible host"
        agent, h = choice
        return int(self._groups[agent][h])
