"""What each view change deposed, PBFT beside T-PBFT on the same seeded runs (docs/tpbft.md, "Session 15").

For every (core, epoch, target view) the first correct node to start a view change records the primary it
suspects; the fault schedule says whether that primary is correct or flaky and which of its down episodes
caused it. A view change is classed by the deposed primary:

  correct                  a correct primary (timers, standby waits)
  first_episode            a flaky primary in its first down episode: no rule on past behaviour can avoid it
  repeat_deposed_before    a flaky primary this core had already started a view change against
  repeat_visible           a flaky primary with an earlier episode that began before the middle of the previous
                           epoch (T-PBFT: the reports ranking(e) is made from could hold it; a rule can avoid it)
  repeat_after_report      a flaky primary whose earlier episodes all began after those reports (trust lag)
  repeat                   PBFT (one epoch, no ranking): a flaky primary with an earlier episode
  flaky_up                 a flaky primary with no episode of its own in the last `RECENT_S`

and by how the primary got there: `by_id` (PBFT, and T-PBFT's epoch 0), `incumbent` (T-PBFT: led on from
the epoch before), `ranked_first` (T-PBFT: ranking(e)[0], not the incumbent), `successor` (a later view).

The two cores' view changes are then paired by (deposed node, episode): a flaky node's episode deposed in
both cores is common (the same failure, whichever epoch it fell in), and only the rest is counted as a
core's own. Latency and view-change figures are simulated time (the same on any machine).

    PYTHONPATH=src .venv/bin/python benchmarks/tpbft_vc_causes.py --behaviour intermittent --nodes 31 \\
        --byzantine 10 --seed 0 --runs 270 --rows-out causes.jsonl
    PYTHONPATH=src .venv/bin/python benchmarks/tpbft_vc_causes.py --summarise causes-*.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tpbft_sim import add_rows_args, add_scenario_args, build_scenario, paired_rows, simulation  # noqa: E402

from dwcp.consensus.pbft.execution import ExecutionMixin  # noqa: E402
from dwcp.consensus.pbft.state import Mode  # noqa: E402
from dwcp.consensus.pbft.viewchange import ViewChangeMixin  # noqa: E402
from dwcp.consensus.sim.faults import Crash, Isolate  # noqa: E402
from dwcp.consensus.tpbft import replica as tpbft_replica  # noqa: E402

RECENT_S = 3.0  # an episode that began longer ago than this did not cause the view change
REPORT_LAG_S = 0.2  # a report is sent at the epoch's middle height and judges heights `lag` blocks older
_START_VC = ViewChangeMixin.start_view_change
_ENTER_EPOCH = ExecutionMixin._enter_epoch
_CHOOSE = tpbft_replica.Replica._choose_group


class Recorder:
    """One run's view-change starts, epoch entries and rankings, as the first correct node saw them."""

    def __init__(self, correct: set[int]) -> None:
        self.correct = correct
        self.events: dict[tuple[int, int], dict[str, Any]] = {}
        self.epochs: dict[int, float] = {0: 0.0}
        self.choices: dict[int, dict[str, Any]] = {}


_ACTIVE: list[Recorder] = []


def _start_view_change(self: Any, now: float, view: int, outs: list[Any]) -> None:
    rec = _ACTIVE[-1] if _ACTIVE else None
    starting = view > self.view and not (self.mode is Mode.VIEW_CHANGE and view <= self.vc_target)
    if rec is not None and starting and self.node_id in rec.correct and (self.epoch, view) not in rec.events:
        rec.events[(self.epoch, view)] = {
            "t": round(now, 3),
            "epoch": self.epoch,
            "from_view": self.view,
            "view": view,
            "primary": self.primary(self.epoch, self.view),
            "next": self.primary(self.epoch, view),
        }
    _START_VC(self, now, view, outs)


def _enter_epoch(self: Any, now: float, epoch: int, outs: list[Any], replay: bool) -> None:
    rec = _ACTIVE[-1] if _ACTIVE else None
    if rec is not None and self.node_id in rec.correct:
        rec.epochs.setdefault(epoch, round(now, 3))
    _ENTER_EPOCH(self, now, epoch, outs, replay)


def _choose_group(self: Any, epoch: int, incumbent: int) -> None:
    _CHOOSE(self, epoch, incumbent)
    rec = _ACTIVE[-1] if _ACTIVE else None
    if rec is not None and self.node_id in rec.correct and epoch not in rec.choices:
        rec.choices[epoch] = {"incumbent": incumbent, "rank": list(self.rankings[epoch][:12])}


def run_one(
    protocol: str,
    *,
    behaviour: str,
    nodes: int,
    byzantine: int,
    seed: int,
    duration: float,
    epoch_length: int,
    config: dict[str, Any] | None = None,
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
    episodes: dict[int, list[tuple[float, float]]] = {}
    began: dict[int, float] = {}
    for fault in sc.episodes:
        if isinstance(fault, Crash | Isolate):
            began[fault.node] = fault.at
        else:
            episodes.setdefault(fault.node, []).append((round(began.pop(fault.node), 3), round(fault.at, 3)))
    sim = simulation(sc, protocol, epoch_length, config)
    rec = Recorder(set(sc.correct))
    ViewChangeMixin.start_view_change = _start_view_change  # type: ignore[method-assign]
    ExecutionMixin._enter_epoch = _enter_epoch  # type: ignore[method-assign]
    tpbft_replica.Replica._choose_group = _choose_group  # type: ignore[method-assign]
    _ACTIVE.append(rec)
    try:
        r = sim.run()
    finally:
        _ACTIVE.pop()
        ViewChangeMixin.start_view_change = _START_VC  # type: ignore[method-assign]
        ExecutionMixin._enter_epoch = _ENTER_EPOCH  # type: ignore[method-assign]
        tpbft_replica.Replica._choose_group = _CHOOSE  # type: ignore[method-assign]
    return {
        "seed": seed,
        "proto": protocol,
        "vc": r.view_changes,
        "ok": r.ok,
        "p50": r.latency_p50_s,
        "faulty": {str(k): v for k, v in sc.byzantine.items()},
        "episodes": {str(k): v for k, v in episodes.items()},
        "epochs": {str(k): v for k, v in rec.epochs.items()},
        "choices": {str(k): v for k, v in rec.choices.items()},
        "events": list(rec.events.values()),
    }


def _causing_episode(event: dict[str, Any], row: dict[str, Any]) -> tuple[list[list[float]], bool]:
    """The primary's episodes that began before the view change, and whether the last one caused it."""
    eps = [e for e in row["episodes"].get(str(event["primary"]), []) if e[0] <= event["t"]]
    return eps, bool(eps) and event["t"] - eps[-1][0] <= RECENT_S


def cause(event: dict[str, Any], row: dict[str, Any]) -> str:
    primary = str(event["primary"])
    if primary not in row["faulty"]:
        return "correct"
    if row["faulty"][primary] != "intermittent":
        return "byzantine"
    before, recent = _causing_episode(event, row)
    if not recent:
        return "flaky_up"
    if len(before) == 1:
        return "first_episode"
    if any(e["t"] < event["t"] and e["primary"] == event["primary"] for e in row["events"]):
        return "repeat_deposed_before"
    if row["proto"] == "pbft" or event["epoch"] == 0:
        return "repeat"
    start, end = row["epochs"][str(event["epoch"] - 1)], row["epochs"][str(event["epoch"])]
    reported = (start + end) / 2 - REPORT_LAG_S  # ranking(e) comes from reports sent at e - 1's middle
    return "repeat_visible" if any(e[0] < reported for e in before[:-1]) else "repeat_after_report"


def how_primary(event: dict[str, Any], row: dict[str, Any]) -> str:
    if row["proto"] == "pbft" or event["epoch"] == 0:
        return "by_id" if event["from_view"] == 0 else "by_id_successor"
    if event["from_view"] > 0:
        return "successor"
    choice = row["choices"].get(str(event["epoch"]))
    return "incumbent" if choice and choice["incumbent"] == event["primary"] else "ranked_first"


def episode_key(event: dict[str, Any], row: dict[str, Any]) -> tuple[int, str]:
    """(deposed node, its causing episode): the same failure in both cores, whichever epoch it fell in."""
    before, recent = _causing_episode(event, row)
    if str(event["primary"]) in row["faulty"] and recent:
        return event["primary"], f"episode {len(before) - 1}"
    return event["primary"], f"at {event['t']:.1f} s"


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["seed"], {})[r["proto"]] = r
    seeds = sorted(s for s, d in by.items() if {"pbft", "tpbft"} <= set(d))
    totals = {p: collections.Counter() for p in ("pbft", "tpbft")}
    only = {p: collections.Counter() for p in ("pbft", "tpbft")}
    vc = collections.Counter()
    common, listed = 0, []
    for s in seeds:
        keys = {}
        for proto in ("pbft", "tpbft"):
            row = by[s][proto]
            vc[proto] += row["vc"]
            keys[proto] = collections.Counter(episode_key(e, row) for e in row["events"])
            for e in row["events"]:
                totals[proto][f"{cause(e, row)}/{how_primary(e, row)}"] += 1
        both = keys["pbft"] & keys["tpbft"]
        common += sum(both.values())
        for proto in ("pbft", "tpbft"):
            row, left = by[s][proto], keys[proto] - both
            for e in row["events"]:
                k = episode_key(e, row)
                if left[k] > 0:
                    left[k] -= 1
                    label = f"{cause(e, row)}/{how_primary(e, row)}"
                    only[proto][label] += 1
                    listed.append([s, proto, e["epoch"], e["from_view"], e["primary"], k[1], label])
    return {
        "seeds": len(seeds),
        "view_changes": dict(vc),
        "not_ok": sum(not by[s][p]["ok"] for s in seeds for p in ("pbft", "tpbft")),
        "starts": {p: sum(c.values()) for p, c in totals.items()},
        "by_cause": {p: dict(c.most_common()) for p, c in totals.items()},
        "common": common,
        "only": {p: dict(c.most_common()) for p, c in only.items()},
        "only_listed": listed,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scenario_args(ap, behaviour="intermittent", nodes=31, byzantine=10)
    ap.add_argument("--config", default="{}", help='T-PBFT Config fields as JSON, e.g. {"accepted_grace": 0}')
    add_rows_args(ap)
    args = ap.parse_args(argv)
    rows = paired_rows(args, run_one, config=json.loads(args.config))
    summary = summarise(rows)
    print(
        f"seeds {summary['seeds']}, view changes (simulator's count) {summary['view_changes']}, "
        f"runs not ok {summary['not_ok']}"
    )
    for proto in ("pbft", "tpbft"):
        print(f"  {proto:5s} starts {summary['starts'][proto]:4d}  {summary['by_cause'][proto]}")
    print(f"paired by (deposed node, episode): common {summary['common']}")
    for proto in ("pbft", "tpbft"):
        print(f"  only {proto:5s} {sum(summary['only'][proto].values()):4d}  {summary['only'][proto]}")
    for line in summary["only_listed"]:
        print("    seed {} {} epoch {} view {} primary {} ({}): {}".format(*line))
    return 0 if summary["not_ok"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
