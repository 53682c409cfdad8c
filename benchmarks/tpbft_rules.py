"""T-PBFT rule variants beside PBFT on the same seeded simulator runs (docs/tpbft.md, "Session 12").

Target (issue 12, simulator): n = 10 with 3 faulty and n = 31 with 10, runs covering >= 4 epochs: T-PBFT fewer
view changes and fewer messages per block than PBFT in the same runs, p50 no worse. `consensus_sim.py` runs
the campaign (every seed, violations); this script compares *rule variants* on a few hundred seeds and adds
two figures that need a correct node's status (polled every 20 ms of simulated time):

- `vdone`: views completed, the sum over epochs of the highest view a correct node reached (primaries
  replaced); `vc` is the simulator's figure, view changes *started* by the busiest correct node.
- `gaps`: a primary whose view a view change ended in epoch e leads view 0 of epoch e + 1.
- `grp_full`/`grp_n`: epochs >= 1 whose group (view 0) holds every correct node. With 3 faulty of 10 the
  7 correct nodes are exactly a quorum: a group without one of them needs a faulty member's vote.

Variants (each a T-PBFT config or ranking, the same scenario and seed):
  pbft     PBFT
  old      T-PBFT before session 12 (`fresh_incumbent=False`, `accepted_grace=0`)
  new      T-PBFT as on main (`fresh_incumbent=True`, `accepted_grace=1` since session 14)
  nograce  the rules on main without `accepted_grace` (0: the rules before session 14)
  g9 / g10 group of 9 / 10 at n = 10 (default 8: q + 1)
  sb15     standby_after 0.15 s (default 0.3)
  r4       trust reports at a quarter of the epoch (default: its middle)
  oracle   ranking from epoch 1 fixed by an oracle: correct nodes by placement (sum of base one-way delays
           to the other correct nodes), then the faulty ones
  oraclew  every node by placement to all nodes (faulty ones too: they vote in PBFT), a correct primary first
  oracle2  the f + 1 best-placed correct nodes first (the primary group), then every node by placement
  seen     the rules on main, but every node's ranking(e + 1) also deposes the primaries of the views any
           correct node entered in epoch e, committed or not (a simulator-only oracle: what a rule that could
           see a primary deposed after it proposed the epoch's last height would gain at most). Rerun with
           the previous run's views until they repeat (at most `SEEN_PASSES` runs), so every node ranks alike
  nofresh  the rules on main without `fresh_incumbent` (the epoch's last height pipelined with the others)
  static   an idealised bound, not a rule: epoch 0 as on main, then one epoch that never ends (no drain, no
           re-ranking after ranking(1)): what T-PBFT's p50 would be if the epoch switch cost nothing
  pipelast the rules on main, but the epoch's last height pipelined with the others (`may_propose` always True:
           `fresh_incumbent`'s deposed-by-committed-views and top-k parts kept). Session 16 tried it as a rule
           (`last_height_alone`, 5b30d67) and `overlap_switch` / `last_after_prepared` (2463df5, variants `overlap`,
           `prep`, `prepov` there); none kept (docs/tpbft.md, "Session 16")
  pipelast_r4  pipelast with the trust reports at a quarter of the epoch (r4): a pipelined last height no longer
           waits for, and carries, the mid-epoch reports that arrive late in the epoch
  grace1 / grace2  the rules on main with `accepted_grace` 1 / 2 (1: main's default since session 14): a request
           timeout whose tx is in a block accepted in this view, not yet executed and still gaining votes
           waits up to 1 / 2 more timeouts before a view change (docs/tpbft.md, rule 6)

Latency is simulated time (load-independent: the same figures on any machine).

    PYTHONPATH=src .venv/bin/python benchmarks/tpbft_rules.py --behaviour intermittent --runs 100 \\
        --duration 8 --variants pbft,old,new --json-out rules.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tpbft_sim import (  # noqa: E402
    PLACES,
    add_scenario_args,
    build_scenario,
    p50_by_place,
    run_rows,
    seed_list,
    simulation,
)

from dwcp.consensus.sim import Simulation  # noqa: E402
from dwcp.consensus.tpbft import replica as tpbft_replica  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "old": {"fresh_incumbent": False, "accepted_grace": 0},
    "nograce": {"accepted_grace": 0},
    "new": {},
    "g9": {"group_size": 9},
    "g10": {"group_size": 10},
    "sb15": {"standby_after": 0.15},
    "r4": {},
    "oracle": {},
    "oraclew": {},
    "oracle2": {},
    "seen": {},
    "grace1": {"accepted_grace": 1},
    "grace2": {"accepted_grace": 2},
    "nofresh": {"fresh_incumbent": False},
    "static": {},
    "pipelast": {},
    "pipelast_r4": {},
}
SEEN_PASSES = 5
VARIANTS = ("pbft", *CONFIGS)
_CHOOSE = tpbft_replica.Replica._choose_group
_REPORT_HEIGHT = tpbft_replica.Replica._report_height
_ENTER_VIEW = tpbft_replica.Replica._enter_view
_EPOCH_END = tpbft_replica.Replica.epoch_end
_MAY_PROPOSE = tpbft_replica.Replica.may_propose


def _always(self: Any, height: int) -> bool:
    return True  # `pipelast`: the epoch's last height is not held back


def _placement(sim: Simulation, among: list[int], to: list[int]) -> dict[int, float]:
    return {i: sum(sim.net.one_way(i, j) for j in to if j != i) for i in among}


def oracle_order(variant: str, sim: Simulation, nodes: int, correct: list[int]) -> tuple[int, ...]:
    everyone = list(range(nodes))
    if variant == "oracle":
        score = _placement(sim, correct, correct)
        return (*sorted(correct, key=lambda i: (score[i], i)), *(i for i in everyone if i not in correct))
    score = _placement(sim, everyone, everyone)
    k = 1 if variant == "oraclew" else (nodes - 1) // 3 + 1
    head = sorted(correct, key=lambda i: (score[i], i))[:k]
    return (*head, *sorted((i for i in everyone if i not in head), key=lambda i: (score[i], i)))


def _patch(
    variant: str,
    order: tuple[int, ...] | None,
    seen_views: dict[int, int] | None = None,
    entered: dict[int, int] | None = None,
    correct: frozenset[int] = frozenset(),
) -> None:
    """Ranking and report-height variants replace the replica's methods for one run (restored after).
    `seen`: `seen_views` (epoch -> highest view a correct node entered, from the run before) deposes in every
    node's ranking, and this run's entered views are written to `entered`."""
    cls = tpbft_replica.Replica
    if seen_views is not None and entered is not None:

        def choose_seen(self: Any, epoch: int, incumbent: int) -> None:
            self.top_view = max(self.top_view, seen_views.get(epoch - 1, 0))
            _CHOOSE(self, epoch, incumbent)

        def enter_view(self: Any, now: float, nv: Any, proof: Any, blocks: Any, outs: Any) -> None:
            _ENTER_VIEW(self, now, nv, proof, blocks, outs)
            if self.node_id in correct:
                entered[self.epoch] = max(entered.get(self.epoch, 0), self.view)

        cls._choose_group = choose_seen  # type: ignore[method-assign]
        cls._enter_view = enter_view  # type: ignore[method-assign]
        return
    cls._enter_view = _ENTER_VIEW  # type: ignore[method-assign]
    if order is not None:

        def choose(self: Any, epoch: int, incumbent: int) -> None:
            _CHOOSE(self, epoch, incumbent)
            self.rankings[epoch] = order
            self._groups.clear()

        cls._choose_group = choose  # type: ignore[method-assign]
    else:
        cls._choose_group = _CHOOSE  # type: ignore[method-assign]
    if variant in ("r4", "pipelast_r4"):

        def quarter(self: Any, epoch: int) -> int:
            return epoch * self.config.epoch_length + max(1, self.config.epoch_length // 4)

        cls._report_height = quarter  # type: ignore[method-assign]
    else:
        cls._report_height = _REPORT_HEIGHT  # type: ignore[method-assign]
    if variant == "static":

        def endless(self: Any, epoch: int) -> int | None:
            return self.config.epoch_length if epoch == 0 else None  # epoch 1 never ends

        cls.epoch_end = endless  # type: ignore[method-assign]
    else:
        cls.epoch_end = _EPOCH_END  # type: ignore[method-assign]
    cls.may_propose = _always if variant in ("pipelast", "pipelast_r4") else _MAY_PROPOSE  # type: ignore[method-assign]


def run_one(
    variant: str, *, behaviour: str, nodes: int, byzantine: int, seed: int, duration: float, epoch_length: int
) -> dict[str, Any]:
    scenario = {
        "behaviour": behaviour,
        "nodes": nodes,
        "byzantine": byzantine,
        "seed": seed,
        "duration": duration,
        "epoch_length": epoch_length,
    }
    if variant != "seen":
        return _run(variant, **scenario)
    views: dict[int, int] = {}
    for k in range(SEEN_PASSES):
        entered: dict[int, int] = {}
        row = _run(variant, **scenario, seen_views=views, entered=entered)
        row["passes"] = k + 1
        if entered == views:
            break
        views = entered
    return row


def _run(
    variant: str,
    *,
    behaviour: str,
    nodes: int,
    byzantine: int,
    seed: int,
    duration: float,
    epoch_length: int,
    seen_views: dict[int, int] | None = None,
    entered: dict[int, int] | None = None,
) -> dict[str, Any]:
    protocol = "pbft" if variant == "pbft" else "tpbft"
    sc = build_scenario(
        protocol,
        behaviour=behaviour,
        nodes=nodes,
        byzantine=byzantine,
        seed=seed,
        duration=duration,
        epoch_length=epoch_length,
    )
    sim = simulation(sc, protocol, epoch_length, CONFIGS.get(variant))
    correct = list(sc.correct)
    _patch(
        variant,
        oracle_order(variant, sim, nodes, correct) if variant.startswith("oracle") else None,
        seen_views,
        entered,
        frozenset(correct),
    )
    watch, seen, groups = correct[0], [], {}

    def poll() -> None:
        node = sim.nodes[watch]
        if node.up:
            core = node.instances[0].core
            st = core.status()
            key = (st.get("epoch", 0), st["view"], st["primary"])
            if not seen or seen[-1] != key:
                seen.append(key)
            if protocol == "tpbft" and key[0] >= 1 and key[0] not in groups:
                groups[key[0]] = core.group(key[0], 0)
        sim.clock.after(0.02, poll)

    sim.clock.at(0.0, poll)
    try:
        r = sim.run()
    finally:
        _patch("new", None)
    gaps = sum(
        1
        for k, (e, v, p) in enumerate(seen)
        if any(e2 == e and v2 > v for e2, v2, _ in seen[k + 1 :]) and (e + 1, 0, p) in seen[k + 1 :]
    )
    top: dict[int, int] = {}
    for e, v, _ in seen:
        top[e] = max(top.get(e, 0), v)
    return {
        "seed": seed,
        "variant": variant,
        "vc": r.view_changes,
        "vdone": sum(top.values()),
        "gaps": gaps,
        "p50": r.latency_p50_s,
        "p99": r.latency_p99_s,
        "mpb": r.messages_per_block,
        "ok": r.ok,
        "epochs": max(e for e, _, _ in seen) + 1,
        "grp_full": sum(set(correct) <= set(g) for g in groups.values()),
        "grp_n": len(groups),
        **p50_by_place(sim, epoch_length),
    }


def summarise(rows: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    by: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["seed"], {})[r["variant"]] = r
    seeds = sorted(s for s, d in by.items() if all(v in d for v in variants))
    out: dict[str, Any] = {"seeds": len(seeds)}
    base = "pbft" if "pbft" in variants else None
    for v in variants:
        rs = [by[s][v] for s in seeds]
        fig: dict[str, Any] = {
            "view_changes": sum(r["vc"] for r in rs),
            "views_completed": sum(r["vdone"] for r in rs),
            "gaps": sum(r["gaps"] for r in rs),
            "runs_not_ok": sum(not r["ok"] for r in rs),
            "p50_median_s": statistics.median(r["p50"] for r in rs),
            "p99_median_s": statistics.median(r["p99"] for r in rs),
            "msgs_per_block_median": statistics.median(r["mpb"] for r in rs),
            "min_epochs": min(r["epochs"] for r in rs),
            **{f"share_{p}_mean": statistics.mean(r.get(f"share_{p}", 0.0) for r in rs) for p in PLACES},
            "group_holds_every_correct_node": [sum(r["grp_full"] for r in rs), sum(r["grp_n"] for r in rs)],
        }
        if base and v != base:
            pairs = [(by[s][base], by[s][v]) for s in seeds]
            fig["vs_pbft"] = {
                "p50_ratio_median": statistics.median(b["p50"] / a["p50"] for a, b in pairs),
                "p50_ratio_mean": statistics.mean(b["p50"] / a["p50"] for a, b in pairs),
                "p99_ratio_median": statistics.median(b["p99"] / a["p99"] for a, b in pairs),
                "msgs_ratio_median": statistics.median(b["mpb"] / a["mpb"] for a, b in pairs),
                **{
                    f"p50_{p}_ratio_median": statistics.median(
                        b[f"p50_{p}"] / a[f"p50_{p}"] for a, b in pairs if a.get(f"p50_{p}") and b.get(f"p50_{p}")
                    )
                    for p in PLACES
                    if any(a.get(f"p50_{p}") and b.get(f"p50_{p}") for a, b in pairs)
                },
                "vc_fewer_equal_more": [
                    sum(b["vc"] < a["vc"] for a, b in pairs),
                    sum(b["vc"] == a["vc"] for a, b in pairs),
                    sum(b["vc"] > a["vc"] for a, b in pairs),
                ],
            }
        out[v] = fig
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="pbft,old,new")
    add_scenario_args(ap, behaviour="mixed", nodes=10, byzantine=3, runs=30, duration=24.0)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--rows-out", type=Path, default=None, help="every run's figures, one JSON line each")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    seeds = seed_list(args)
    rows = run_rows(args, variants, run_one)
    summary = summarise(rows, variants)
    print(
        f"{args.behaviour}, n={args.nodes}, {args.byzantine} faulty, seeds {min(seeds)}-{max(seeds)} ({len(seeds)}),"
        f" {args.duration:g} s, epoch {args.epoch_length} (simulated time; seed baseline: T-PBFT latency < 60 ms"
        f" single-site, not comparable with this WAN)"
    )
    for v in variants:
        f = summary[v]
        line = (
            f"  {v:8s} VC {f['view_changes']:4d}  views completed {f['views_completed']:4d}  gaps {f['gaps']}  "
            f"not ok {f['runs_not_ok']}  p50 {f['p50_median_s']:.3f}  p99 {f['p99_median_s']:.3f}  "
            f"msgs/block {f['msgs_per_block_median']:.1f}"
        )
        if "vs_pbft" in f:
            x = f["vs_pbft"]
            line += (
                f"  | /PBFT same run: p50 {x['p50_ratio_median']:.3f} (mean {x['p50_ratio_mean']:.3f}) "
                f"p99 {x['p99_ratio_median']:.3f} msgs {x['msgs_ratio_median']:.3f} "
                f"VC fewer/equal/more {'/'.join(map(str, x['vc_fewer_equal_more']))}"
            )
            line += "  | p50 by place " + " ".join(
                f"{p} {x[f'p50_{p}_ratio_median']:.3f} ({f[f'share_{p}_mean']:.0%})"
                for p in PLACES
                if f"p50_{p}_ratio_median" in x
            )
        print(line)
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary}, indent=2)
        )
    return 0 if all(summary[v]["runs_not_ok"] == 0 for v in variants) else 1


if __name__ == "__main__":
    sys.exit(main())
