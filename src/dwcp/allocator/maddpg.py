"""MADDPG (Lowe et al., 2017) for discrete actions, via the Gumbel-softmax relaxation.

Per agent i: a decentralised actor mu_i(o_i) and a centralised critic Q_i(x, a_1..a_N) that sees every
agent's observation and action; target copies of both, moved by soft (Polyak) updates; one shared replay
buffer of joint transitions. Updates, as in the paper:
    y       = r + gamma * (1 - done) * Q'_i(x', a'_1..a'_N),   a'_j = gumbel_softmax(mu'_j(o'_j))
    L(Q_i)  = (Q_i(x, a) - y)^2
    L(mu_i) = -Q_i(x, a_1..gumbel_softmax(mu_i(o_i))..a_N) + reg * mean(logits^2)
The logit penalty and gradient clipping (0.5) follow the authors' reference implementation.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dwcp.allocator.networks import Actor, Critic


@dataclass
class MaddpgConfig:
    n_agents: int = 4
    group_size: int = 4
    gamma: float = 0.9
    tau: float = 0.01
    lr_actor: float = 1e-3
    lr_critic: float = 1e-3
    batch: int = 256
    actor_hidden: int = 32
    critic_hidden: int = 128
    temperature: float = 1.0
    reg: float = 1e-3
    grad_clip: float = 0.5


def _soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.mul_(1.0 - tau).add_(s, alpha=tau)


class Maddpg:
    def __init__(self, cfg: MaddpgConfig, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.cfg = cfg
        n = cfg.n_agents
        self.actors = [Actor(cfg.actor_hidden) for _ in range(n)]
        self.critics = [Critic(n, cfg.group_size, cfg.critic_hidden) for _ in range(n)]
        self.target_actors = [copy.deepcopy(a) for a in self.actors]
        self.target_critics = [copy.deepcopy(c) for c in self.critics]
        self.actor_opts = [torch.optim.Adam(a.parameters(), lr=cfg.lr_actor) for a in self.actors]
        self.critic_opts = [torch.optim.Adam(c.parameters(), lr=cfg.lr_critic) for c in self.critics]

    @torch.no_grad()
    def act(self, obs: tuple[np.ndarray, np.ndarray, np.ndarray], explore: bool) -> np.ndarray:
        """Joint action (N, G + 1): Gumbel-softmax samples when exploring, plain softmax otherwise."""
        job, hosts, mask = (torch.as_tensor(x) for x in obs)
        out = []
        for i, actor in enumerate(self.actors):
            logits = actor(job[None], hosts[i][None], mask[i][None])
            p = F.gumbel_softmax(logits, tau=self.cfg.temperature) if explore else F.softmax(logits, -1)
            out.append(p[0])
        return torch.stack(out).numpy()

    def update(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        cfg = self.cfg
        b = {k: torch.as_tensor(v) for k, v in batch.items()}
        job, hosts, mask, acts = b["job"], b["hosts"], b["mask"], b["actions"]
        with torch.no_grad():
            next_acts = torch.stack([
                F.gumbel_softmax(ta(b["next_job"], b["next_hosts"][:, j], b["next_mask"][:, j]), tau=cfg.temperature)
                for j, ta in enumerate(self.target_actors)
            ], dim=1)
        critic_losses, actor_losses = [], []
        for i in range(cfg.n_agents):
            with torch.no_grad():
                q_next = self.target_critics[i](b["next_job"], b["next_hosts"], b["next_mask"], next_acts)
                y = b["reward"] + cfg.gamma * (1.0 - b["done"]) * q_next
            q = self.critics[i](job, hosts, mask, acts)
            lc = F.mse_loss(q, y)
            self.critic_opts[i].zero_grad()
            lc.backward()
            torch.nn.utils.clip_grad_norm_(self.critics[i].parameters(), cfg.grad_clip)
            self.critic_opts[i].step()

            logits = self.actors[i](job, hosts[:, i], mask[:, i])
            joint = acts.clone()
            joint[:, i] = F.gumbel_softmax(logits, tau=cfg.temperature)
            valid = torch.cat([mask[:, i], torch.ones_like(mask[:, i, :1])], dim=-1)
            reg = torch.where(valid, logits, torch.zeros_like(logits)).pow(2).mean()
            la = -self.critics[i](job, hosts, mask, joint).mean() + cfg.reg * reg
            self.actor_opts[i].zero_grad()
            la.backward()
            torch.nn.utils.clip_grad_norm_(self.actors[i].parameters(), cfg.grad_clip)
            self.actor_opts[i].step()
            critic_losses.append(lc.item())
            actor_losses.append(la.item())
        for i in range(cfg.n_agents):
            _soft_update(self.target_actors[i], self.actors[i], cfg.tau)
            _soft_update(self.target_critics[i], self.critics[i], cfg.tau)
        return {"critic_loss": float(np.mean(critic_losses)), "actor_loss": float(np.mean(actor_losses))}

    # Checkpoint format: a dict of tensors and plain numbers only, so `torch.load(weights_only=True)` reads it.
    def checkpoint(self, include_critics: bool = False) -> dict:
        ck: dict = {"format": "dwcp-maddpg-v1", "config": asdict(self.cfg)}
        for i, a in enumerate(self.actors):
            ck[f"actor_{i}"] = {k: v.detach().clone() for k, v in a.state_dict().items()}
        if include_critics:
            for i, c in enumerate(self.critics):
                ck[f"critic_{i}"] = {k: v.detach().clone() for k, v in c.state_dict().items()}
        return ck

    def save(self, path: Path | str, include_critics: bool = False) -> None:
        torch.save(self.checkpoint(include_critics), path)

    @classmethod
    def load(cls, path: Path | str) -> Maddpg:
        ck = load_checkpoint(path)
        m = cls(MaddpgConfig(**ck["config"]))
        for i, a in enumerate(m.actors):
            a.load_state_dict(ck[f"actor_{i}"])
            m.target_actors[i].load_state_dict(ck[f"actor_{i}"])
        for i, c in enumerate(m.critics):
            if f"critic_{i}" in ck:
                c.load_state_dict(ck[f"critic_{i}"])
                m.target_critics[i].load_state_dict(ck[f"critic_{i}"])
        return m


def load_checkpoint(path: Path | str) -> dict:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != "dwcp-maddpg-v1":
        raise ValueError(f"{path}: not a dwcp MADDPG checkpoint")
    return ck
