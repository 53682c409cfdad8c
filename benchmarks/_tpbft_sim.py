"""Pieces the T-PBFT simulator benchmarks share (`tpbft_rules.py`, `tpbft_vc_causes.py`, `tpbft_p50_parts.py`): the
scenario every one of them runs (a seed, 10 tx/s), the seed arguments, and running PBFT beside T-PBFT per seed with
one JSON row per run (or reading such rows back), so the three scripts never carry three copies of them.
Imported as `from _tpbft_sim import ...` (the scripts run with benchmarks/ on sys.path)."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dwcp.consensus.sim import Scenario, Simulation
from dwcp.consensus.tpbft import Config

RATE = 10.0  # offered tx/s: light load, so latency is the protocol's and not a queue's


def build_scenario(
    protocol: str, *, behaviour: str, nodes: int, byzantine: int, seed: int, duration: float, epoch_length: int
) -> Scenario:
    return Scenario.build(
        protocol,
        nodes=nodes,
        byzantine=byzantine,
        behaviour=behaviour,
        seed=seed,
        duration=duration,
        rate=RATE,
        epoch_length=epoch_length,
    )


def simulation(sc: Scenario, protocol: str, epoch_length: int, config: dict[str, Any] | None = None) -> Simulation:
    """The simulator of one run: PBFT's core as it is, or T-PBFT's with `epoch_length` and `config` (whose
    fields may override it)."""
    if protocol == "pbft":
        return Simulation(sc)
    return Simulation(sc, core_kwargs={"config": Config(**{"epoch_length": epoch_length, **(config or {})})})


PLACES = ("first", "inner", "last")  # a height's place in its epoch (T-PBFT drains its pipeline at both ends)


def place_of(height: int, epoch_length: int) -> str:
    """ "first", "last" or "inner": where `height` sits in its epoch (PBFT: the same heights mod the length)."""
    at = (height - 1) % epoch_length + 1
    return "first" if at == 1 else "last" if at == epoch_length else "inner"


def p50_by_place(sim: Simulation, epoch_length: int) -> dict[str, Any]:
    """Median latency (the simulator's: submit -> commit at the node it was handed to) of the transactions
    committed at each place in the epoch, and the share of transactions there. The height is the one a
    correct node executed the transaction at."""
    checker = sim.checker
    heights: dict[bytes, int] = {}
    for node in sorted(checker.correct):
        for tid, h in checker.executed[node].items():
            heights.setdefault(tid, h)
    by: dict[str, list[float]] = {p: [] for p in PLACES}
    for tid, (t, _) in checker.submitted.items():
        done = checker.commit_at_origin.get(tid, checker.first_commit.get(tid))
        h = heights.get(tid)
        if done is not None and h is not None:
            by[place_of(h, epoch_length)].append(done - t)
    total = sum(len(v) for v in by.values()) or 1
    out: dict[str, Any] = {}
    for p, xs in by.items():
        out[f"p50_{p}"] = statistics.median(xs) if xs else None
        out[f"share_{p}"] = round(len(xs) / total, 4)
    return out


def add_scenario_args(
    ap: argparse.ArgumentParser, *, behaviour: str, nodes: int, byzantine: int, runs: int = 10, duration: float = 8.0
) -> None:
    ap.add_argument("--behaviour", default=behaviour)
    ap.add_argument("--nodes", type=int, default=nodes)
    ap.add_argument("--byzantine", type=int, default=byzantine)
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None, help="these seeds (comma-separated) instead of --seed/--runs")
    ap.add_argument("--duration", type=float, default=duration)
    ap.add_argument("--epoch-length", type=int, default=16)


def seed_list(args: argparse.Namespace) -> Sequence[int]:
    return [int(x) for x in args.seeds.split(",")] if args.seeds else range(args.seed, args.seed + args.runs)


def paired_rows(args: argparse.Namespace, run_one: Callable[..., dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
    """`--summarise FILES`: their rows; otherwise PBFT and T-PBFT on every seed (`run_rows`)."""
    if args.summarise is not None:
        return [json.loads(line) for path in args.summarise for line in Path(path).read_text().splitlines() if line]
    return run_rows(args, ("pbft", "tpbft"), run_one, **extra)


def run_rows(
    args: argparse.Namespace, arms: Sequence[str], run_one: Callable[..., dict[str, Any]], **extra: Any
) -> list[dict[str, Any]]:
    """`run_one(arm, ...)` for every arm on every seed of the scenario arguments, each row also written to
    `--rows-out` as it comes (a long campaign keeps what it finished)."""
    rows: list[dict[str, Any]] = []
    sink = args.rows_out.open("w") if args.rows_out else None
    try:
        for seed in seed_list(args):
            for arm in arms:
                row = run_one(
                    arm,
                    behaviour=args.behaviour,
                    nodes=args.nodes,
                    byzantine=args.byzantine,
                    seed=seed,
                    duration=args.duration,
                    epoch_length=args.epoch_length,
                    **extra,
                )
                rows.append(row)
                if sink:
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
    finally:
        if sink:
            sink.close()
    return rows


def add_rows_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rows-out", type=Path, default=None, help="every run's record, one JSON line each")
    ap.add_argument("--summarise", type=Path, nargs="*", default=None, help="summarise these rows files instead")
