"""The `intermittent` fault model: an honest core whose host crashes and restarts, or whose links drop
both ways, in episodes drawn from the seed for the whole run. Named explicitly, never drawn by "mixed",
so every existing seed's scenario and trace stay what they were."""

from __future__ import annotations

import dataclasses

import pytest

from dwcp.consensus.sim import (
    BYZANTINE,
    Crash,
    Isolate,
    Rejoin,
    Restart,
    Scenario,
    Simulation,
    intermittent_episodes,
)
from dwcp.consensus.sim.faults import INTERMITTENT_DOWN_S, INTERMITTENT_UP_S
from dwcp.consensus.tpbft import Config as TpbftConfig

RUN = {"duration": 8.0, "rate": 10.0, "epoch_length": 16}


def _windows(episodes: tuple[object, ...]) -> list[tuple[type, float, float]]:
    """(kind, down at, up at) per episode, in order."""
    out = []
    for start, end in zip(episodes[::2], episodes[1::2], strict=True):
        assert (type(start), type(end)) in ((Crash, Restart), (Isolate, Rejoin))
        assert start.node == end.node and start.at < end.at
        out.append((type(start), start.at, end.at))
    return out


def test_episodes_cover_the_whole_run_in_the_drawn_ranges() -> None:
    episodes = intermittent_episodes(seed=3, node=4, until=28.0)
    windows = _windows(episodes)
    assert {kind for kind, _, _ in windows} == {Crash, Isolate}  # flaky host and flaky link both occur
    previous_up = 0.0
    for _, down, up in windows:
        assert INTERMITTENT_UP_S[0] <= down - previous_up <= INTERMITTENT_UP_S[1]
        assert INTERMITTENT_DOWN_S[0] <= up - down <= INTERMITTENT_DOWN_S[1]
        previous_up = up
    assert windows[-1][1] < 28.0 <= windows[-1][2] + INTERMITTENT_UP_S[1]  # to the end of the run
    assert episodes == intermittent_episodes(seed=3, node=4, until=28.0)
    assert episodes != intermittent_episodes(seed=4, node=4, until=28.0)


def test_scenario_gives_episodes_to_the_intermittent_nodes_only_and_mixed_never_draws_it() -> None:
    sc = Scenario.build("tpbft", nodes=10, byzantine=3, behaviour="intermittent,mixed,mixed", seed=2, **RUN)
    flaky = [node for node, name in sc.byzantine.items() if name == "intermittent"]
    assert len(flaky) == 1 and len(sc.byzantine) == 3
    assert sc.episodes and {e.node for e in sc.episodes} == set(flaky)
    assert sc.episodes == intermittent_episodes(2, flaky[0], RUN["duration"] + sc.drain)
    assert flaky[0] not in sc.correct and sc.healed_at == 0.0  # faulty, and liveness is judged from t = 0
    assert sc.describe()["episodes"][0].endswith(f" {flaky[0]}")
    # "mixed" draws what it drew before the behaviour existed, and describes no episodes
    assert BYZANTINE == ("silent", "equivocate", "twins", "invalid-signature", "garbage")
    mixed = Scenario.build("pbft", nodes=10, byzantine=3, seed=5, chaos=True, duration=4.0, rate=10.0)
    assert mixed.byzantine == {2: "silent", 7: "equivocate", 8: "equivocate"} and not mixed.episodes
    assert "episodes" not in mixed.describe()
    with pytest.raises(ValueError, match="only intermittent nodes"):
        dataclasses.replace(mixed, episodes=(Crash(1.0, 0), Restart(2.0, 0)))


@pytest.mark.parametrize(("protocol", "trace"), [("pbft", "c4083a8b354f9aa5dd27674325f9cf51"),
                                                 ("tpbft", "bc10a1fd93f1b6b7f66fc813019991f1")])
def test_an_existing_mixed_seed_runs_exactly_as_before(protocol: str, trace: str) -> None:
    """Trace hashes of this scenario on main a105700's simulator (before `intermittent` existed). T-PBFT
    runs the rules of then (session 12 added `fresh_incumbent`, which changes its runs, not the simulator's)."""
    sc = Scenario.build(protocol, nodes=10, byzantine=3, seed=5, chaos=True, duration=4.0, rate=10.0, epoch_length=8)
    old_rules = {"config": TpbftConfig(epoch_length=8, fresh_incumbent=False)} if protocol == "tpbft" else None
    sim = Simulation(sc, core_kwargs=old_rules)
    assert sim.run().trace_hash == trace


@pytest.mark.parametrize("protocol", ["pbft", "tpbft"])
def test_the_node_is_down_when_scheduled_and_up_between_episodes(protocol: str) -> None:
    sc = Scenario.build(protocol, nodes=10, byzantine=3, behaviour="intermittent", seed=1, **RUN)
    sim = Simulation(sc)
    probes: list[tuple[int, float, bool, bool]] = []  # (node, time, up, connected to a correct node)
    peer = sc.correct[0]

    def probe(node: int) -> None:
        n = sim.nodes[node]
        probes.append((node, sim.clock.now, n.up, sim.net.connected(node, peer)))

    windows = {node: _windows(tuple(e for e in sc.episodes if e.node == node)) for node in sc.byzantine}
    for node, ws in windows.items():
        for _kind, down, up in ws:
            if up < sc.duration:
                sim.clock.at((down + up) / 2, probe, node)
                sim.clock.at(up + 0.05, probe, node)
    result = sim.run()
    assert result.ok, result.violation_details
    expected = []
    for node, ws in windows.items():
        for kind, down, up in ws:
            if up < sc.duration:
                # crashed: not up; isolated: up (timers and all) but cut from everyone
                expected.append((node, (down + up) / 2, kind is Isolate, kind is Crash))
                expected.append((node, up + 0.05, True, True))
    assert sorted(probes) == sorted(expected)
    # nothing reached or left an isolated node while its links were down (frames in flight included)
    for node, ws in windows.items():
        for kind, down, up in ws:
            if kind is Isolate:
                assert not [e for e in sim._trace if len(e) == 4 and down < e[0] < up and node in e[1:3]]
    # honest between episodes: it commits the same blocks as everyone, checked for safety (result.ok)
    logs = [len(sim.nodes[node].instances[0].log) for node in windows]
    assert min(logs) > 0.5 * result.committed_blocks
    assert all(sim.checker.heights[node] == height for node, height in zip(windows, logs, strict=True))


def test_an_intermittent_run_is_reproducible_and_differs_from_silent_nodes() -> None:
    sc = Scenario.build("tpbft", nodes=10, byzantine=3, behaviour="intermittent", seed=7, **RUN)
    assert Simulation(sc).run().trace_hash == Simulation(sc).run().trace_hash
    silent = Scenario.build("tpbft", nodes=10, byzantine=3, behaviour="silent", seed=7, **RUN)
    assert set(silent.byzantine) == set(sc.byzantine)  # same nodes, only what they do differs
    assert Simulation(silent).run().trace_hash != Simulation(sc).run().trace_hash


@pytest.mark.parametrize("protocol", ["pbft", "tpbft"])
def test_intermittent_nodes_with_byzantine_ones_partitions_and_crashes_violate_nothing(protocol: str) -> None:
    failures = []
    for seed in range(300, 306):
        sc = Scenario.build(protocol, nodes=7, byzantine=2, behaviour="intermittent,mixed", seed=seed, chaos=True,
                            duration=6.0, rate=10.0, epoch_length=8)
        result = Simulation(sc).run()
        if not result.ok:
            failures.append(f"seed {seed} {sc.byzantine}: {result.violation_details[:2]}")
    assert not failures, failures
