"""Observations: what each agent sees about the waiting workload and about the hosts of its group.

The same functions feed training, `dwcp allocator evaluate` and the service, so a policy sees identical
numbers offline and online. Everything is scaled to roughly [0, 1] by cluster-wide maxima, so a policy
trained on one cluster still reads sensibly on another of similar shape.
"""

from __future__ import annotations

import numpy as np

from dwcp.allocator.cluster import ClusterState

JOB_F = 6  # demand (3, / largest host), duration, wait fraction, powered-on capacity fraction
HOST_F = 8  # free-after (3), utilisation now, empty, extension share, busy horizon, host size
DURATION_SCALE_S = 3600.0
HORIZON_CAP = 4.0  # busy horizons are capped at 4 h: beyond that they no longer change a choice


def job_features(state: ClusterState, demand: np.ndarray, duration: float, waited: float, max_wait: float
                 ) -> np.ndarray:
    cap_max = state.capacity.max(axis=0)
    powered = state.capacity[state.count > 0, 0].sum() / state.capacity[:, 0].sum()
    return np.array([
        *(demand / cap_max),
        min(duration / DURATION_SCALE_S, HORIZON_CAP) / HORIZON_CAP,
        min(waited / max(max_wait, 1.0), 1.0),
        powered,
    ], dtype=np.float32)


def host_features(state: ClusterState, demand: np.ndarray, duration: float, now: float) -> np.ndarray:
    """(hosts, HOST_F) for every host; rows of hosts that cannot take the workload are still filled."""
    cap = state.capacity
    free_after = np.clip((cap - state.used - demand) / cap, -1.0, 1.0)
    util = (state.used / cap).max(axis=1)
    busy = state.count > 0
    drain = state.drain_times()
    end = now + duration
    # Share of the workload's run that would extend the host's powered-on period (1 for an empty host).
    extension = np.where(busy, np.clip(end - np.maximum(drain, now), 0.0, None) / duration, 1.0)
    horizon = np.where(busy, np.clip((drain - now) / DURATION_SCALE_S, 0.0, HORIZON_CAP) / HORIZON_CAP, 0.0)
    size = cap[:, 0] / cap[:, 0].max()
    out = np.column_stack([free_after, util, (~busy).astype(np.float64), extension, horizon, size])
    return out.astype(np.float32)


def groups_of(state: ClusterState, n_agents: int) -> list[np.ndarray]:
    """Host indices per agent; a host's group beyond the agent count wraps around."""
    g = state.group % n_agents
    return [np.flatnonzero(g == i) for i in range(n_agents)]
