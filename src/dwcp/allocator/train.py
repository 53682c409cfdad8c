"""Training loop: episodes of generated traces, MADDPG updates, periodic validation, best checkpoint kept.

Training traces come from the series in TRAIN_SERIES with seeds from `seed * 10_000`; validation uses
the same series with other seeds; the held-out evaluation (benchmark) uses google2019 and azure_v2 with
seeds >= HELD_OUT_SEED, none of which training ever sees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dwcp.allocator.baselines import BestFit, RandomFit, RoundRobin
from dwcp.allocator.cluster import HostSpec, default_cluster
from dwcp.allocator.env import AllocationEnv
from dwcp.allocator.evaluate import replay
from dwcp.allocator.maddpg import Maddpg, MaddpgConfig
from dwcp.allocator.policy import MaddpgPolicy
from dwcp.allocator.replay import ReplayBuffer
from dwcp.allocator.traces import generate

TRAIN_SERIES = ("alibaba2018", "synthetic")
HELD_OUT_SERIES = ("google2019", "azure_v2")
HELD_OUT_SEED = 1_000_000


@dataclass
class TrainConfig:
    episodes: int = 60
    seed: int = 0
    hours: float = 2.0  # trace length per episode
    base_rate: float = 0.04
    warmup_steps: int = 500
    update_every: int = 2
    buffer: int = 100_000
    validate_every: int = 5
    validation_traces: int = 2
    max_seconds: float | None = None  # wall-clock bound: validate and stop after the episode that passes it
    maddpg: MaddpgConfig = field(default_factory=MaddpgConfig)


@dataclass
class TrainResult:
    curve: list[dict]  # one row per validation: episode, steps, cost per policy
    best_cost: float
    checkpoint: Path
    seconds: float


def _validation_cost(hosts: list[HostSpec], traces, policy_factory) -> float:
    return float(np.mean([replay(hosts, tr, policy_factory())[0].cost_core_hours for tr in traces]))


def train(cfg: TrainConfig, out: Path, hosts: list[HostSpec] | None = None,
          progress: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train and write the best (by validation cost) actors to `out`; `progress(episode, info)` per episode."""
    torch.set_num_threads(1)
    hosts = hosts or default_cluster()
    rng = np.random.default_rng(cfg.seed)

    def trace_for(ep: int):
        return generate(TRAIN_SERIES[ep % len(TRAIN_SERIES)], cfg.seed * 10_000 + ep, cfg.hours, cfg.base_rate)

    env = AllocationEnv(hosts, trace_for, cfg.maddpg.n_agents)
    cfg.maddpg.group_size = env.group_size
    agent = Maddpg(cfg.maddpg, cfg.seed)
    job_f, n, g = env.obs_shape
    from dwcp.allocator.features import HOST_F

    buf = ReplayBuffer(cfg.buffer, job_f, n, g, HOST_F)
    val = [generate(TRAIN_SERIES[k % len(TRAIN_SERIES)], cfg.seed * 10_000 + 5_000 + k, cfg.hours, cfg.base_rate)
           for k in range(cfg.validation_traces)]
    base = {name: _validation_cost(hosts, val, f) for name, f in
            (("round-robin", RoundRobin), ("best-fit", BestFit), ("random", lambda: RandomFit(cfg.seed)))}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".candidate.pt")
    curve: list[dict] = []
    best = np.inf
    steps = 0
    t0 = time.perf_counter()
    losses: dict[str, float] = {}
    for ep in range(cfg.episodes):
        env.reset(seed=ep)
        ep_return = 0.0
        done = env.decision is None
        while not done:
            obs = env.arrays()
            acts = agent.act(obs, explore=True)
            _, rewards, terms, _, _ = env.step({a: acts[i] for i, a in enumerate(env.agents)})
            done = next(iter(terms.values()))
            r = next(iter(rewards.values()))
            ep_return += r
            buf.add(obs, acts, r, None if done else env.arrays(), done)
            steps += 1
            if steps >= cfg.warmup_steps and steps % cfg.update_every == 0:
                losses = agent.update(buf.sample(cfg.maddpg.batch, rng))
        info = {"return": ep_return, "steps": steps, **losses}
        out_of_time = cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds
        if (ep + 1) % cfg.validate_every == 0 or ep == cfg.episodes - 1 or out_of_time:
            agent.save(tmp)
            cost = _validation_cost(hosts, val, lambda: MaddpgPolicy(tmp))
            curve.append({"episode": ep + 1, "steps": steps, "maddpg": cost, **base})
            info["val_cost"] = cost
            if cost < best:
                best = cost
                agent.save(out)
            out.with_suffix(".curve.json").write_text(json.dumps(curve, indent=1))
        if progress:
            progress(ep, info)
        if out_of_time:
            break
    tmp.unlink(missing_ok=True)
    return TrainResult(curve, float(best), out, time.perf_counter() - t0)


def plot_curve(curve: list[dict], path: Path) -> None:
    """Validation cost of MADDPG over training, with the baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    eps = [row["episode"] for row in curve]
    ax.plot(eps, [row["maddpg"] for row in curve], marker="o", label="MADDPG (validation)")
    for name, style in (("round-robin", ":"), ("random", "-."), ("best-fit", "--")):
        ax.axhline(curve[0][name], linestyle=style, color="grey" if name != "best-fit" else "black", label=name)
    ax.set_xlabel("training episode")
    ax.set_ylabel("powered-on core-hours (lower is better)")
    ax.set_title("MADDPG allocator: validation cost during training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
