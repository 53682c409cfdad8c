"""Many seeded runs, spread over worker processes, with a progress bar on stderr.

Run k uses seed `first_seed + k`. Every protocol in `protocols` runs the *same* scenario for a
seed (Byzantine ids and behaviours, faults and client load are drawn from the seed alone), so
their figures can be compared run by run. A `time_limit` stops handing out new seeds when it
passes; the runs finished by then are returned and `Campaign.complete` says whether all were.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dwcp.consensus.sim.report import RunResult
from dwcp.consensus.sim.runner import simulate
from dwcp.consensus.sim.scenario import Scenario


@dataclass(frozen=True)
class CampaignSpec:
    protocols: tuple[str, ...] = ("pbft",)
    nodes: int = 10
    byzantine: int = 0
    behaviour: str = "mixed"
    regions: str = "4"
    first_seed: int = 0
    runs: int = 1
    chaos: bool = False
    scenario_kwargs: dict[str, Any] = field(default_factory=dict)  # duration, rate, loss, crypto, ...

    def scenario(self, protocol: str, seed: int) -> Scenario:
        return Scenario.build(protocol, nodes=self.nodes, byzantine=self.byzantine, behaviour=self.behaviour,
                              regions=self.regions, seed=seed, chaos=self.chaos, **self.scenario_kwargs)


@dataclass
class Campaign:
    spec: CampaignSpec
    results: dict[str, list[RunResult]]
    wall_s: float
    complete: bool

    @property
    def runs(self) -> int:
        return min((len(v) for v in self.results.values()), default=0)

    @property
    def ok(self) -> bool:
        return all(r.ok for rs in self.results.values() for r in rs)


def run_seed(spec: CampaignSpec, seed: int) -> list[RunResult]:
    """Every protocol on the scenario of one seed (the unit of work a worker does)."""
    return [simulate(spec.scenario(p, seed)) for p in spec.protocols]


def _work(args: tuple[CampaignSpec, int]) -> list[RunResult]:
    return run_seed(*args)


def _results(spec: CampaignSpec, workers: int) -> Iterator[list[RunResult]]:
    seeds = ((spec, spec.first_seed + k) for k in range(spec.runs))
    if workers <= 1:
        yield from map(_work, seeds)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        yield from pool.imap_unordered(_work, seeds, chunksize=1)
        pool.terminate()


def run_campaign(spec: CampaignSpec, *, workers: int = 1, progress: bool = True,
                 time_limit: float | None = None) -> Campaign:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    started = time.perf_counter()
    results: dict[str, list[RunResult]] = {p: [] for p in spec.protocols}
    complete = True
    bad = 0
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[bad]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=False) as bar:
        task = bar.add_task("/".join(spec.protocols), total=spec.runs, bad="no violations")
        stream = _results(spec, workers)
        for batch in stream:
            for r in batch:
                results[r.protocol].append(r)
                bad += not r.ok
            bar.update(task, advance=1, bad=f"[red]{bad} runs with violations" if bad else "no violations")
            if time_limit is not None and time.perf_counter() - started > time_limit:
                complete = len(results[spec.protocols[0]]) == spec.runs
                stream.close()
                break
    for rs in results.values():
        rs.sort(key=lambda r: r.seed)
    return Campaign(spec, results, time.perf_counter() - started, complete)
