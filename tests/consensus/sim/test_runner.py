"""The simulator end to end on the real cores: determinism, every Byzantine behaviour, crashes with
restart from the node's own log, and the figures a run reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dwcp.consensus.sim import BEHAVIOURS, Crash, Heal, Partition, Restart, Scenario, Simulation, simulate
from dwcp.consensus.sim.scenario import parse_fault

SHORT = {"duration": 4.0, "rate": 20.0}


def test_same_seed_gives_the_same_trace() -> None:
    sc = Scenario.build("pbft", nodes=7, byzantine=2, seed=11, chaos=True, **SHORT)
    first, second = simulate(sc), simulate(sc)
    assert first.trace_hash == second.trace_hash
    assert first.row() | {"wall_s": 0} == second.row() | {"wall_s": 0}
    other = simulate(Scenario.build("pbft", nodes=7, byzantine=2, seed=12, chaos=True, **SHORT))
    assert other.trace_hash != first.trace_hash


def test_trace_does_not_depend_on_the_process_hash_seed() -> None:
    code = ("from dwcp.consensus.sim import Scenario, simulate; "
            "print(simulate(Scenario.build('pbft', nodes=4, byzantine=1, seed=3, chaos=True, "
            "duration=3.0, rate=20.0)).trace_hash)")
    hashes = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(hashes) == 1


def test_scenario_draws_byzantine_nodes_and_faults_from_the_seed() -> None:
    a = Scenario.build("pbft", nodes=10, byzantine=3, seed=4, chaos=True)
    assert a == Scenario.build("pbft", nodes=10, byzantine=3, seed=4, chaos=True)
    assert a.byzantine == Scenario.build("tpbft", nodes=10, byzantine=3, seed=4, chaos=True).byzantine
    assert len(a.byzantine) == 3 and set(a.byzantine.values()) <= set(BEHAVIOURS) - {"none"}
    assert a.faults and a.healed_at <= 0.4 * a.duration
    dealt = Scenario.build("pbft", byzantine=2, behaviour="twins,silent", seed=1).byzantine
    assert sorted(dealt.values()) == ["silent", "twins"]
    with pytest.raises(ValueError, match="unknown behaviour"):
        Scenario.build("pbft", byzantine=1, behaviour="sneaky")


def test_honest_run_commits_everything_with_plausible_wan_figures() -> None:
    r = simulate(Scenario(protocol="pbft", nodes=4, seed=1, duration=4.0, rate=50.0))
    assert r.ok, r.violation_details
    assert r.committed_tx > 100 and r.committed_blocks > 10
    # 4 regions: a commit needs three one-way hops among the nearest quorum, tens of ms each
    assert 0.05 < r.latency_p50_s <= r.latency_p99_s < 1.0
    assert r.messages_per_block > 3 * 3 and r.bytes_per_block > 0
    assert r.rejected == {} and r.lost == 0


@pytest.mark.parametrize("behaviour", ["silent", "equivocate", "twins", "invalid-signature", "garbage"])
def test_each_behaviour_is_survived_by_the_correct_nodes(behaviour: str) -> None:
    sc = Scenario(protocol="pbft", nodes=4, seed=2, byzantine={0: behaviour}, duration=6.0, rate=20.0)
    sim = Simulation(sc)
    r = sim.run()
    assert r.violations["agreement"] == r.violations["validity"] == r.violations["duplicate"] == 0
    expected = {"invalid-signature": "sender_mismatch", "garbage": "truncated"}
    if behaviour in expected:
        assert r.rejected.get(expected[behaviour], 0) > 0
    if behaviour == "twins":
        assert len(sim.nodes[0].instances) == 2


def test_crashed_node_restarts_from_its_own_log_and_catches_up() -> None:
    faults = (Crash(1.0, 2), Restart(2.5, 2))
    sim = Simulation(Scenario(protocol="pbft", nodes=4, seed=3, faults=faults, duration=7.0, rate=20.0))
    r = sim.run()
    heights = [len(n.instances[0].log) for n in sim.nodes]
    assert r.ok, r.violation_details
    assert heights[2] == max(heights) > 0


def test_partitioned_minority_catches_up_after_heal() -> None:
    faults = (Partition(0.5, ((3,), (0, 1, 2))), Heal(2.0))
    sim = Simulation(Scenario(protocol="pbft", nodes=4, seed=4, faults=faults, duration=7.0, rate=20.0))
    r = sim.run()
    assert r.ok, r.violation_details  # liveness: node 3 executed every tx submitted after the heal
    assert len(sim.nodes[3].instances[0].log) > 0.5 * max(len(n.instances[0].log) for n in sim.nodes)


def test_result_row_is_json() -> None:
    r = simulate(Scenario(protocol="pbft", nodes=4, seed=0, duration=2.0, rate=10.0))
    row = json.loads(json.dumps(r.row()))
    for key in ("committed_blocks", "committed_tx", "throughput_tx_per_s", "latency_p50_s", "latency_p99_s",
                "messages_per_block", "bytes_per_block", "view_changes", "violations", "trace_hash"):
        assert key in row


def test_a_run_splits_its_messages_by_type_and_counts_the_drivers_height_gossip_apart() -> None:
    sim = Simulation(Scenario(protocol="probft", nodes=4, seed=0, duration=2.0, rate=10.0))
    r = sim.run()
    assert r.messages_by_type == {"Ballot:commit": 156, "Ballot:prepare": 156, "Proposal": 39, "Status": 24,
                                  "TxBatch": 10}
    assert sum(r.messages_by_type.values()) == r.messages == 385
    # Each node gossips its height to its 3 peers every 0.5 s from 0.5·(1 + id/4) s: node 0 four times
    # by 2.0 s, the others three times: 3·4 + 3·3·3 = 39 SyncStatus, not counted in `messages`.
    assert r.driver_messages == {"BlockRequest": 1, "BlockResponse": 1, "SyncStatus": 39}
    assert r.trace_hash.startswith("4c226bdae22a")  # counting changes nothing in the run (dense ballots: session 8)


@pytest.mark.parametrize(("text", "fault"), [
    ("1.5:crash:3", Crash(1.5, 3)), ("4:restart:3", Restart(4.0, 3)), ("2:heal", Heal(2.0)),
    ("0.5:partition:0,1|2,3", Partition(0.5, ((0, 1), (2, 3)))),
])
def test_parse_fault(text: str, fault: object) -> None:
    assert parse_fault(text) == fault


@pytest.mark.parametrize("text", ["crash:3", "1:crash", "1:explode:2", "x:heal", "1:partition:a|b"])
def test_parse_fault_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="--fault"):
        parse_fault(text)


def test_explicit_faults_replace_drawn_ones() -> None:
    sc = Scenario.build("pbft", nodes=4, seed=1, chaos=True, faults=(Crash(1.0, 2), Restart(2.0, 2)))
    assert sc.faults == (Crash(1.0, 2), Restart(2.0, 2)) and sc.healed_at == 2.0
    with pytest.raises(ValueError, match="no node 9"):
        Scenario.build("pbft", nodes=4, faults=(Crash(1.0, 9),))


def test_catch_up_runs_the_drivers_planner_and_apply_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node back from a crash catches up through `transport.sync` (the planner and `apply_fetched`
    a node's driver runs), with a silent Byzantine peer in the committee."""
    from dwcp.consensus.sim import runner as runner_module
    from dwcp.consensus.transport import sync

    applied: list[int] = []  # blocks per answer that went through the apply loop
    asked: list[int] = []  # peers the planners picked

    def counting_apply(planner, peer, items, next_height, verify, feed):
        items = list(items)
        applied.append(len(items))
        return sync.apply_fetched(planner, peer, items, next_height, verify, feed)

    plan = sync.CatchUpPlanner.next_request

    def counting_plan(self, now, local_height):
        out = plan(self, now, local_height)
        if out is not None:
            asked.append(out[0])
        return out

    monkeypatch.setattr(runner_module, "apply_fetched", counting_apply)
    monkeypatch.setattr(sync.CatchUpPlanner, "next_request", counting_plan)
    faults = (Crash(1.0, 2), Restart(3.0, 2))
    sc = Scenario(protocol="pbft", nodes=4, seed=3, faults=faults, duration=7.0, rate=20.0, byzantine={0: "silent"})
    sim = Simulation(sc)
    r = sim.run()
    heights = [len(n.instances[0].log) for n in sim.nodes]
    assert r.ok, r.violation_details
    assert heights[2] == max(heights[1:]) > 0
    assert applied and sum(applied) > 0  # fetched blocks went through the shared apply loop
    assert asked and set(asked) <= {0, 1, 2, 3}
    assert sim.nodes[2].instances[0].planner.peer_heights  # the height gossip fed the planner
