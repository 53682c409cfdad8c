"""The actor and critic networks, and the numpy copy of the actor the service runs.

Actor (one per agent = host group): a small MLP scores each host of the group from [workload, host] features
(shared weights across the group's hosts, so a group may hold any number of hosts), and a second MLP
gives a "decline" logit from the workload and the group's mean host features. Hosts that cannot take the
workload get logit -1e9. The action is the distribution over (hosts..., decline).

Critic (one per agent, centralised as in MADDPG): an MLP over every agent's observation and action.

The service runs `NumpyActors`, the same forward pass in numpy, all agents in one batched matmul per layer:
at this size (a few 32-wide layers) torch's per-call overhead would be most of the cost, and numpy keeps
inference far under the 2 ms target (CPU-time p99 ~0.3 ms).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dwcp.allocator.features import HOST_F, JOB_F

NEG = -1e9


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class Actor(nn.Module):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.score = _mlp(JOB_F + HOST_F, hidden, 1)
        self.decline = _mlp(JOB_F + HOST_F, hidden, 1)

    def forward(self, job: torch.Tensor, hosts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """job (B, J), hosts (B, G, F), mask (B, G) bool → logits (B, G + 1)."""
        g = hosts.shape[1]
        x = torch.cat([job.unsqueeze(1).expand(-1, g, -1), hosts], dim=-1)
        scores = self.score(x).squeeze(-1).masked_fill(~mask, NEG)
        m = mask.unsqueeze(-1).float()
        pooled = (hosts * m).sum(1) / m.sum(1).clamp(min=1.0)
        decline = self.decline(torch.cat([job, pooled], dim=-1))
        return torch.cat([scores, decline], dim=-1)


class Critic(nn.Module):
    def __init__(self, n_agents: int, group_size: int, hidden: int = 128) -> None:
        super().__init__()
        obs = JOB_F + n_agents * group_size * (HOST_F + 1)
        self.net = _mlp(obs + n_agents * (group_size + 1), hidden, 1)

    def forward(self, job: torch.Tensor, hosts: torch.Tensor, mask: torch.Tensor, actions: torch.Tensor
                ) -> torch.Tensor:
        """job (B, J), hosts (B, N, G, F), mask (B, N, G), actions (B, N, G + 1) → Q (B,)."""
        b = job.shape[0]
        x = torch.cat([job, hosts.reshape(b, -1), mask.reshape(b, -1).float(), actions.reshape(b, -1)], dim=-1)
        return self.net(x).squeeze(-1)


def _numpy_layers(seq: nn.Sequential | dict[str, torch.Tensor], prefix: str = "") -> list[tuple[np.ndarray, ...]]:
    sd = seq.state_dict() if isinstance(seq, nn.Module) else seq
    return [(sd[f"{prefix}{i}.weight"].detach().numpy().T.astype(np.float32).copy(),
             sd[f"{prefix}{i}.bias"].detach().numpy().astype(np.float32).copy()) for i in (0, 2, 4)]


def _run(layers: list[tuple[np.ndarray, ...]], x: np.ndarray) -> np.ndarray:
    for k, (w, b) in enumerate(layers):
        x = x @ w + b
        if k < len(layers) - 1:
            np.maximum(x, 0.0, out=x)
    return x


class NumpyActor:
    """`Actor.forward` for one observation, in numpy, from an actor state_dict."""

    def __init__(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.score = _numpy_layers(state_dict, "score.")
        self.decline = _numpy_layers(state_dict, "decline.")

    def logits(self, job: np.ndarray, hosts: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """job (J,), hosts (G, F), mask (G,) bool → logits (G + 1,)."""
        x = np.concatenate([np.broadcast_to(job, (len(hosts), len(job))), hosts], axis=1)
        scores = _run(self.score, x)[:, 0]
        scores[~mask] = NEG
        pooled = hosts[mask].mean(axis=0) if mask.any() else np.zeros(hosts.shape[1], dtype=np.float32)
        decline = _run(self.decline, np.concatenate([job, pooled])[None, :])[0]
        return np.concatenate([scores, decline]).astype(np.float32)


class NumpyActors:
    """Every agent's `NumpyActor` at once: weights stacked per agent, one batched matmul per layer.

    `logits(job, hosts, mask)` takes hosts (N, G, F) and mask (N, G) with groups padded to G (padded rows
    masked out) and returns (N, G + 1); rows of agents with no feasible host are all NEG but the decline.
    Eight numpy calls per decision instead of ~20 per agent, which is most of the inference time.
    """

    def __init__(self, state_dicts: list[dict[str, torch.Tensor]]) -> None:
        per = [NumpyActor(sd) for sd in state_dicts]
        self.score = [tuple(np.stack([a.score[k][j] for a in per]) for j in (0, 1)) for k in range(3)]
        self.decline = [tuple(np.stack([a.decline[k][j] for a in per]) for j in (0, 1)) for k in range(3)]

    @staticmethod
    def _run(layers: list[tuple[np.ndarray, ...]], x: np.ndarray) -> np.ndarray:
        for k, (w, b) in enumerate(layers):
            x = np.matmul(x, w) + b[:, None, :]
            if k < len(layers) - 1:
                np.maximum(x, 0.0, out=x)
        return x

    def logits(self, job: np.ndarray, hosts: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n, g, _ = hosts.shape
        x = np.concatenate([np.broadcast_to(job, (n, g, len(job))), hosts], axis=2)
        scores = self._run(self.score, x)[:, :, 0]
        scores[~mask] = NEG
        m = mask[:, :, None].astype(np.float32)
        pooled = (hosts * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
        decline = self._run(self.decline, np.concatenate([np.broadcast_to(job, (n, len(job))), pooled], axis=1)
                            [:, None, :])[:, 0, :]
        return np.concatenate([scores, decline], axis=1).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def joint_choice(actions: list[np.ndarray] | np.ndarray, masks: list[np.ndarray] | np.ndarray
                 ) -> tuple[int, int] | None:
    """Turn every agent's action into one placement: (agent, host index within its group), None if none fits.

    Each agent with a feasible host bids `p(best host) - p(decline)`; the highest bid places the workload
    on its best host (ties: the lowest agent, then the lowest host). A deterministic function of the joint
    action, so the critic can learn its effect. Groups are padded to one size (padded hosts masked out).
    """
    acts, mask = np.asarray(actions, dtype=np.float64), np.asarray(masks, dtype=bool)
    hosts = np.where(mask, acts[:, :-1], -np.inf)
    best = np.argmax(hosts, axis=1)
    bids = hosts[np.arange(len(best)), best] - acts[:, -1]
    bids[~mask.any(axis=1)] = -np.inf
    agent = int(np.argmax(bids))
    return None if bids[agent] == -np.inf else (agent, int(best[agent]))
