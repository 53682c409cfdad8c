"""Where T-PBFT's p50 goes against PBFT's, per transaction of the same seeded runs (docs/tpbft.md, "Session 15").

Each committed transaction's latency (submit -> commit at the node it was handed to, the simulator's figure) is
split at the first proposal of a block holding it by a correct primary:

  wait    submit -> proposal: forwarding to the primary, batching, the pipeline's limits and T-PBFT's epoch-end
          drain (the epoch's last height is proposed alone)
  agree   proposal -> commit at the origin: pre-prepare, the prepare and commit quorums, execution in height order,
          and for a T-PBFT follower the `Decided` hop

and `agree` is set beside what a base-delay model of the same block predicts (`model`): pre-prepare from the
block's actual primary, each phase completing at a node at the q-th smallest arrival among the voters, a follower
learning the commit from the first `g - q + 1` members; base one-way delays only (no jitter, no CPU, no node down).
`model` uses the block's actual group (T-PBFT) or the committee (PBFT); `model_all` the same primary with the
whole committee voting, so `model / model_all` is the order-statistic cost of the group alone.
Simulated time: the same figures on any machine.

    PYTHONPATH=src .venv/bin/python benchmarks/tpbft_p50_parts.py --behaviour mixed --nodes 10 --byzantine 3 \\
        --seed 0 --runs 100 --rows-out parts.jsonl
    PYTHONPATH=src .venv/bin/python benchmarks/tpbft_p50_parts.py --summarise parts-*.jsonl
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tpbft_sim import add_rows_args, add_scenario_args, build_scenario, paired_rows, simulation  # noqa: E402

from dwcp.consensus.pbft import replica as pbft_replica  # noqa: E402
from dwcp.consensus.sim.network import NetworkModel  # noqa: E402

TAIL_S = 1.0  # transactions slower than this (view changes) are left out of the normal-case means
_ACCEPT = pbft_replica.Replica._accept_block
_PROPOSALS: list[tuple[set[int], dict[bytes, tuple[float, int, tuple[int, ...], int, int]]]] = []


def _accept_block(self: Any, now: float, block: Any, outs: list[Any]) -> None:
    if _PROPOSALS and block.proposer == self.node_id and block.view == self.view:
        correct, first = _PROPOSALS[-1]
        if self.node_id in correct:
            info = (now, self.node_id, tuple(self.group(self.epoch, self.view)), self.epoch, block.height)
            for tx in block.txs:
                first.setdefault(tx.id, info)
    _ACCEPT(self, now, block, outs)


def modelled_agreement(net: NetworkModel, primary: int, group: Sequence[int], origin: int, quorum: int) -> float:
    """Proposal -> commit at `origin` from base one-way delays: each node prepares at the q-th smallest
    arrival of the group's prepare votes (sent on receiving the pre-prepare) and commits at the q-th
    smallest of their commit votes (sent on preparing); a follower hears from the first g - q + 1 members."""

    def d(a: int, b: int) -> float:
        return 0.0 if a == b else net.one_way(a, b)

    pre = {i: d(primary, i) for i in group}
    prepared = {i: sorted(pre[j] + d(j, i) for j in group)[quorum - 1] for i in group}
    committed = {i: sorted(prepared[j] + d(j, i) for j in group)[quorum - 1] for i in group}
    if origin in committed:
        return committed[origin]
    return min(committed[s] + d(s, origin) for s in group[: len(group) - quorum + 1])


def run_one(
    protocol: str, *, behaviour: str, nodes: int, byzantine: int, seed: int, duration: float, epoch_length: int
) -> dict[str, Any]:
    sc = build_scenario(
        protocol,
        behaviour=behaviour,
        nodes=nodes,
        byzantine=byzantine,
        seed=seed,
        duration=duration,
        epoch_length=epoch_length,
    )
    sim = simulation(sc, protocol, epoch_length)
    first: dict[bytes, tuple[float, int, tuple[int, ...], int, int]] = {}
    pbft_replica.Replica._accept_block = _accept_block  # type: ignore[method-assign]
    _PROPOSALS.append((set(sc.correct), first))
    try:
        r = sim.run()
    finally:
        _PROPOSALS.pop()
        pbft_replica.Replica._accept_block = _ACCEPT  # type: ignore[method-assign]
    quorum = sim.nodes[sc.correct[0]].instances[0].core.committee.quorum
    everyone = tuple(range(nodes))
    parts = []
    for tid, (submitted, origin) in sim.checker.submitted.items():
        done, proposal = sim.checker.commit_at_origin.get(tid), first.get(tid)
        if done is None or proposal is None:
            continue
        at, primary, group, epoch, height = proposal
        parts.append(
            [
                round(at - submitted, 5),
                round(done - at, 5),
                int(origin in group),
                round(modelled_agreement(sim.net, primary, group, origin, quorum), 5),
                round(modelled_agreement(sim.net, primary, everyone, origin, quorum), 5),
                epoch,
                (height - 1) % epoch_length + 1,  # the block's place in its epoch (T-PBFT: 1 follows a drain)
            ]
        )
    return {"seed": seed, "proto": protocol, "p50": r.latency_p50_s, "vc": r.view_changes, "ok": r.ok, "parts": parts}


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarise(rows: list[dict[str, Any]], epoch_length: int) -> dict[str, Any]:
    by: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["seed"], {})[r["proto"]] = r
    seeds = sorted(s for s, d in by.items() if {"pbft", "tpbft"} <= set(d) and all(d[p]["parts"] for p in d))
    keys = ("total", "wait", "agree", "model", "model_all", "wait + model", "total, inner heights")
    ratios: dict[str, list[float]] = collections.defaultdict(list)
    pooled: dict[str, dict[str, list[float]]] = {p: collections.defaultdict(list) for p in ("pbft", "tpbft")}
    for s in seeds:
        med = {}
        for proto in ("pbft", "tpbft"):
            parts = by[s][proto]["parts"]
            cols = {
                "total": [w + a for w, a, *_ in parts],
                "wait": [x[0] for x in parts],
                "agree": [x[1] for x in parts],
                "model": [x[3] for x in parts],
                "model_all": [x[4] for x in parts],
            }
            # The bound's p50: the same waits, agreement as the base-delay model predicts it.
            cols["wait + model"] = [x[0] + x[3] for x in parts]
            # Away from the epoch ends (T-PBFT drains its pipeline there; PBFT's figure is the control).
            cols["total, inner heights"] = [x[0] + x[1] for x in parts if 1 < x[6] < epoch_length]
            med[proto] = {k: _median(v) for k, v in cols.items()}
            # Means are additive (total = wait + agree per tx); transactions slower than TAIL_S (view changes,
            # which both cores pay) are left out so the means describe the normal case the p50 sits in.
            normal = [x for x in parts if x[0] + x[1] <= TAIL_S]
            for k, i in (("mean wait", 0), ("mean agree", 1)):
                pooled[proto][k] += [x[i] for x in normal]
            for x in normal:  # the wait by the block's place in its epoch: the epoch-end drain shows at place 1
                place = "1" if x[6] == 1 else "last" if x[6] == epoch_length else "2 to last - 1"
                pooled[proto][f"mean wait, place {place}"].append(x[0])
            for k, v in cols.items():
                pooled[proto][k] += v
            if proto == "tpbft":
                for _wait, a, member, m, _, epoch, _place in parts:
                    where = ("epoch 0" if epoch == 0 else "epochs 1+") + (" member" if member else " follower")
                    pooled[proto][f"agree, {where}"].append(a)
                    pooled[proto][f"model, {where}"].append(m)
        for k in keys:
            ratios[k].append(med["tpbft"][k] / med["pbft"][k])
        ratios["group only: T model / T model_all"].append(med["tpbft"]["model"] / med["tpbft"]["model_all"])
        ratios["primary only: T model_all / P model"].append(med["tpbft"]["model_all"] / med["pbft"]["model"])
    means = {p: {k: statistics.mean(v) for k, v in pooled[p].items() if k.startswith("mean")} for p in pooled}
    return {
        "seeds": len(seeds),
        "normal_case_means_s": means,
        "not_ok": sum(not by[s][p]["ok"] for s in seeds for p in ("pbft", "tpbft")),
        "same_run_median_t_over_p": {k: statistics.median(v) for k, v in ratios.items()},
        "pooled_median_s": {
            p: {k: _median(v) for k, v in d.items() if not k.startswith("mean")} for p, d in pooled.items()
        },
        "pooled_count": {p: {k: len(v) for k, v in d.items()} for p, d in pooled.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scenario_args(ap, behaviour="mixed", nodes=10, byzantine=3)
    add_rows_args(ap)
    args = ap.parse_args(argv)
    rows = paired_rows(args, run_one)
    summary = summarise(rows, args.epoch_length)
    print(f"seeds {summary['seeds']}, runs not ok {summary['not_ok']} (simulated time)")
    print("same-run median T-PBFT / PBFT:")
    for k, v in summary["same_run_median_t_over_p"].items():
        print(f"  {k:40s} {v:.3f}")
    for proto in ("pbft", "tpbft"):
        print(f"{proto} pooled medians (s, count):")
        for k, v in summary["pooled_median_s"][proto].items():
            print(f"  {k:40s} {v:.4f}  ({summary['pooled_count'][proto][k]})")
    m = summary["normal_case_means_s"]
    print(f"normal-case means (tx total <= {TAIL_S:g} s), PBFT / T-PBFT:")
    for k in sorted(m["tpbft"]):
        print(
            f"  {k:40s} {m['pbft'][k]:.4f} / {m['tpbft'][k]:.4f}  (T-PBFT - PBFT {m['tpbft'][k] - m['pbft'][k]:+.4f})"
        )
    return 0 if summary["not_ok"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
