"""The multi-agent environment (PettingZoo parallel-API style) over the trace simulator.

Agents: one per host group (`group_0` ... `group_{N-1}`). At each decision every agent observes the waiting
workload (`job`, JOB_F numbers) and its own hosts (`hosts`, G x HOST_F; `mask`, which of them can take the
workload now) and answers with a distribution over (its hosts..., decline). `networks.joint_choice` turns
the joint action into one placement, so no action can overcommit a host.

Reward (shared by all agents, as the task is cooperative):
    r = -(core-seconds the placement adds to the powered-on cost) / COST_UNIT - MISS_PENALTY * (SLA misses)
The first term summed over an episode is exactly minus the episode's cost (see `ClusterState.extension`);
misses are charged to the decision after which they happen. COST_UNIT is one 16-core host for an hour.
"""

from __future__ import annotations

import numpy as np

from dwcp.allocator.cluster import HostSpec
from dwcp.allocator.features import HOST_F, JOB_F, groups_of, host_features, job_features
from dwcp.allocator.networks import joint_choice
from dwcp.allocator.sim import Decision, Simulator
from dwcp.allocator.traces import Trace

COST_UNIT = 16 * 3600.0
MISS_PENALTY = 4.0


def observe(sim: Simulator, d: Decision, groups: list[np.ndarray], group_size: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(job (J,), hosts (N, G, F), mask (N, G)), groups padded to `group_size` with masked-out rows."""
    st = sim.state
    job = job_features(st, d.demand, d.duration, d.waited, d.max_wait)
    hf = host_features(st, d.demand, d.duration, d.now)
    n = len(groups)
    hosts = np.zeros((n, group_size, HOST_F), dtype=np.float32)
    mask = np.zeros((n, group_size), dtype=bool)
    for i, idx in enumerate(groups):
        hosts[i, : len(idx)] = hf[idx]
        mask[i, : len(idx)] = d.feasible[idx]
    return job, hosts, mask


class AllocationEnv:
    """`reset(seed)` / `step(actions)` with per-agent dicts; `trace_for(seed)` supplies each episode's trace."""

    def __init__(self, hosts: list[HostSpec], trace_for, n_agents: int = 4) -> None:
        self.hosts = hosts
        self.trace_for = trace_for
        self.agents = [f"group_{i}" for i in range(n_agents)]
        self.groups = [np.flatnonzero(np.array([h.group for h in hosts]) % n_agents == i) for i in range(n_agents)]
        self.group_size = max(len(g) for g in self.groups)
        self.sim: Simulator | None = None
        self.decision: Decision | None = None
        self._obs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return JOB_F, len(self.agents), self.group_size

    def _observation(self) -> dict[str, dict[str, np.ndarray]]:
        job, hosts, mask = self._obs
        return {a: {"job": job, "hosts": hosts[i], "mask": mask[i]} for i, a in enumerate(self.agents)}

    def _advance(self) -> bool:
        self.decision = self.sim.next_decision()
        if self.decision is None:
            self._obs = None
            return True
        self._obs = observe(self.sim, self.decision, self.groups, self.group_size)
        return False

    def reset(self, seed: int = 0, trace: Trace | None = None) -> tuple[dict, dict]:
        self.sim = Simulator(self.hosts, trace if trace is not None else self.trace_for(seed))
        groups = groups_of(self.sim.state, len(self.agents))
        assert all(np.array_equal(a, b) for a, b in zip(groups, self.groups, strict=True))
        done = self._advance()
        return ({} if done else self._observation()), {}

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The current observation as stacked arrays (what the learner stores)."""
        assert self._obs is not None, "episode is over"
        return self._obs

    def step(self, actions: dict[str, np.ndarray]) -> tuple[dict, dict, dict, dict, dict]:
        _, _, mask = self._obs
        acts = [np.asarray(actions[a]) for a in self.agents]
        agent, h = joint_choice(acts, list(mask))
        cost = self.sim.apply(int(self.groups[agent][h]))
        done = self._advance()
        reward = -cost / COST_UNIT - MISS_PENALTY * self.sim.misses_since_last
        rewards = dict.fromkeys(self.agents, float(reward))
        terms = dict.fromkeys(self.agents, done)
        truncs = dict.fromkeys(self.agents, False)
        infos = {a: {"placed_on": int(self.groups[agent][h])} for a in self.agents}
        return ({} if done else self._observation()), rewards, terms, truncs, infos
