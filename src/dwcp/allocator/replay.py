"""A fixed-size ring buffer of joint transitions, stored as preallocated numpy arrays."""

from __future__ import annotations

import numpy as np


class ReplayBuffer:
    """(job, hosts, mask, actions, reward, next job, next hosts, next mask, done), sampled uniformly."""

    def __init__(self, capacity: int, job_f: int, n_agents: int, group_size: int, host_f: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._i = 0
        n, g = n_agents, group_size
        self.job = np.zeros((capacity, job_f), np.float32)
        self.hosts = np.zeros((capacity, n, g, host_f), np.float32)
        self.mask = np.zeros((capacity, n, g), bool)
        self.actions = np.zeros((capacity, n, g + 1), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.next_job = np.zeros_like(self.job)
        self.next_hosts = np.zeros_like(self.hosts)
        self.next_mask = np.zeros_like(self.mask)
        self.done = np.zeros(capacity, np.float32)

    def add(self, obs, actions: np.ndarray, reward: float, next_obs, done: bool) -> None:
        i = self._i
        self.job[i], self.hosts[i], self.mask[i] = obs
        self.actions[i] = actions
        self.reward[i] = reward
        self.done[i] = float(done)
        if next_obs is not None:
            self.next_job[i], self.next_hosts[i], self.next_mask[i] = next_obs
        else:  # terminal: the next observation is never used (done = 1), but keep masks non-empty
            self.next_job[i], self.next_hosts[i], self.next_mask[i] = obs
        self._i = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        idx = rng.integers(0, self.size, batch)
        names = ("job", "hosts", "mask", "actions", "reward", "next_job", "next_hosts", "next_mask", "done")
        return {k: getattr(self, k)[idx] for k in names}
