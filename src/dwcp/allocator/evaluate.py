"""Replay a trace through a policy and report cost, SLA compliance and the optimization vs round-robin.

Optimization = 100 * (1 - cost(policy) / cost(round-robin)) on the same trace and cluster, where cost is
powered-on core-hours (see `sim`). It is only a fair win when `sla_compliance` is at least round-robin's;
`sla_at_least_round_robin` says whether it is.
"""

from __future__ import annotations

import time
from pathlib import Path

from dwcp.allocator.baselines import BASELINES, Policy, RoundRobin, make_baseline
from dwcp.allocator.cluster import HostSpec
from dwcp.allocator.sim import Outcome, Simulator
from dwcp.allocator.traces import Trace

POLICIES = ("maddpg", *BASELINES)


def make_policy(name: str, checkpoint: Path | str | None = None, seed: int = 0) -> Policy:
    if name == "maddpg":
        from dwcp.allocator.policy import MaddpgPolicy

        return MaddpgPolicy(checkpoint)
    return make_baseline(name, seed)


def replay(hosts: list[HostSpec], trace: Trace, policy: Policy) -> tuple[Outcome, float]:
    """The replay's outcome and the seconds spent inside `policy.choose`."""
    sim = Simulator(hosts, trace)
    spent = 0.0
    while (d := sim.next_decision()) is not None:
        t0 = time.perf_counter()
        host = policy.choose(sim.state, d)
        spent += time.perf_counter() - t0
        sim.apply(host)
    return sim.out, spent


def evaluate(hosts: list[HostSpec], trace: Trace, policy: Policy, rr_outcome: Outcome | None = None) -> dict:
    out, spent = replay(hosts, trace, policy)
    rr = rr_outcome if rr_outcome is not None else replay(hosts, trace, RoundRobin())[0]
    opt = 100.0 * (1.0 - out.cost_core_hours / rr.cost_core_hours) if rr.cost_core_hours > 0 else 0.0
    return {
        "policy": policy.name,
        "workloads": out.workloads,
        "cost": round(out.cost_core_hours, 3),
        "cost_unit": "powered-on core-hours",
        "round_robin_cost": round(rr.cost_core_hours, 3),
        "optimization_vs_round_robin_pct": round(opt, 3),
        "sla_compliance": round(out.sla_compliance, 5),
        "round_robin_sla_compliance": round(rr.sla_compliance, 5),
        "sla_at_least_round_robin": out.sla_compliance >= rr.sla_compliance,
        "placed": out.placed,
        "refused": out.refused + out.missed,
        "refused_too_large": out.refused,
        "sla_missed": out.missed,
        "decisions_per_s": round(out.decisions / spent, 1) if spent > 0 else None,
    }
