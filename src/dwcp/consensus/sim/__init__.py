"""Deterministic simulation of the consensus cores: one process, a virtual clock, one seed.

    from dwcp.consensus.sim import Scenario, simulate
    result = simulate(Scenario.build("pbft", nodes=10, byzantine=3, seed=7))
    assert result.ok, result.violation_details

`clock` (event queue), `network` (regions, latency, bandwidth, loss, partitions), `faults`
(partitions, crashes, Byzantine behaviours, intermittent nodes), `scenario` (what a run is), `invariants` (agreement,
validity, duplicates, order, liveness), `nodes` (nodes, keys), `runner` (the
loop), `report` (figures), `campaign` (many seeded runs over processes).
"""

from dwcp.consensus.sim.faults import (
    BEHAVIOURS,
    BYZANTINE,
    Crash,
    Heal,
    Isolate,
    Partition,
    Rejoin,
    Restart,
    intermittent_episodes,
)
from dwcp.consensus.sim.invariants import InvariantChecker, Violations
from dwcp.consensus.sim.network import REGIONS, NetworkModel, pick_regions
from dwcp.consensus.sim.report import RunResult, totals
from dwcp.consensus.sim.runner import Simulation, simulate
from dwcp.consensus.sim.scenario import MIXED, Scenario

__all__ = [
    "BEHAVIOURS", "BYZANTINE", "MIXED", "REGIONS", "Crash", "Heal", "InvariantChecker", "Isolate", "NetworkModel",
    "Partition", "Rejoin", "Restart", "RunResult", "Scenario", "Simulation", "Violations", "intermittent_episodes",
    "pick_regions", "simulate", "totals",
]
