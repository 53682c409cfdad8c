"""The simulator at the seed's scale: downlink incast, CPU busy queues, declared batches carried by
simulated workers into the real Bullshark primaries, and Byzantine nodes (equivocating headers,
withheld batches) at zero violations."""

from __future__ import annotations

import json
import random

import pytest

from dwcp.consensus.bullshark.messages import BatchStored
from dwcp.consensus.bullshark.simworker import DeclaredWorkers
from dwcp.consensus.sim import Scenario
from dwcp.consensus.sim.cpu import PRIMARY, WORKER, CpuCosts, CpuModel
from dwcp.consensus.sim.network import DATA, NetworkModel
from dwcp.consensus.sim.runner import Simulation

MB = 8e6  # bits per second that move one byte per microsecond


def _lan(n: int, **kwargs: float) -> NetworkModel:
    return NetworkModel(["us-east-1"] * n, random.Random(1), jitter=0.0, **kwargs)


def test_incast_queues_copies_at_the_receivers_downlink_in_arrival_order() -> None:
    net = _lan(4, bandwidth_bps=10 * MB, downlink_bps=MB)  # uplinks 10x faster than the downlink
    edges = [net.transmit(0.0, a, 3, 10_000) for a in (0, 1, 2)]  # three senders, one receiver
    assert edges == [pytest.approx(0.001 + 0.0005)] * 3  # 1 ms on each uplink, 0.5 ms one way
    done = [net.downlink(edge, 3, 10_000) for edge in edges]
    assert done == [pytest.approx(0.0015 + 0.010 * k) for k in (1, 2, 3)]  # 10 ms each, back to back
    assert net.downlink(1.0, 3, 1000) == pytest.approx(1.001)  # an idle downlink starts at arrival
    assert net.downlink(0.0, 2, 1000) == pytest.approx(0.001)  # another receiver's is its own


def test_a_vote_does_not_wait_behind_the_batches_on_the_workers_flow() -> None:
    net = _lan(2, bandwidth_bps=MB, downlink_bps=MB)
    batch = net.transmit(0.0, 0, 1, 100_000, DATA)  # 100 ms of batch on the uplink
    vote = net.transmit(0.0, 0, 1, 100)  # the primary's flow: its own queue
    assert batch == pytest.approx(0.1005) and vote == pytest.approx(0.0006)
    assert net.transmit(0.0, 0, 1, 1000, DATA) == pytest.approx(0.1015)  # behind the batch
    assert net.downlink(vote, 1, 100) == pytest.approx(0.0007)
    assert net.downlink(batch, 1, 100_000, DATA) == pytest.approx(0.2005)


def test_fan_out_queues_on_the_senders_uplink_then_each_downlink() -> None:
    net = _lan(3, bandwidth_bps=MB, downlink_bps=MB)
    edges = net.transmit_all(0.0, 0, [1, 2], 5_000)
    assert edges == [pytest.approx(0.005 + 0.0005), pytest.approx(0.010 + 0.0005)]
    assert [net.downlink(e, b, 5_000) for e, b in zip(edges, (1, 2), strict=True)] == [
        pytest.approx(0.0105), pytest.approx(0.0155)]


def test_cpu_lane_is_a_busy_queue_and_a_pool_hands_jobs_on_in_order() -> None:
    one = CpuModel(2, CpuCosts())
    assert [one.run(0, PRIMARY, 0.0, 0.004) for _ in range(3)] == pytest.approx([0.004, 0.008, 0.012])
    assert one.run(0, WORKER, 0.001, 0.002) == pytest.approx(0.003)  # the worker's lane is another process
    assert one.run(1, PRIMARY, 0.0, 0.001) == pytest.approx(0.001)
    assert one.run(0, PRIMARY, 1.0, 0.001) == pytest.approx(1.001)  # idle lane: starts on arrival
    pool = CpuModel(1, CpuCosts(), cores=(2, 1))
    assert pool.run(0, PRIMARY, 0.0, 0.010) == pytest.approx(0.010)
    assert pool.run(0, PRIMARY, 0.0, 0.002) == pytest.approx(0.010)  # done at 2 ms, handed on after the first
    assert pool.run(0, PRIMARY, 0.0, 0.002) == pytest.approx(0.010)  # second core free again at 2 ms: 4 ms
    assert pool.busy[0][PRIMARY] == pytest.approx(0.014)


def test_costs_of_a_frame_follow_the_calibration(tmp_path) -> None:
    costs = CpuCosts(sign=1e-5, verify=4e-5, hash_per_byte=1e-9, encode_per_byte=2e-10, decode_per_byte=5e-10,
                     encode_fixed=1e-7, decode_fixed=2e-7)
    assert costs.send(1000) == pytest.approx(1e-7 + 2e-7 + 1e-5)
    assert costs.receive(1000, 67) == pytest.approx(68 * 4e-5 + 2e-7 + 5e-7)
    assert costs.batch(500_000) == pytest.approx(5e-4)
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps({"costs": costs.as_dict(), "machine": {}}))
    assert CpuCosts.load(path) == costs
    path.write_text(json.dumps({"costs": {"verfy": 1e-5}}))
    with pytest.raises(ValueError, match="verfy"):
        CpuCosts.load(path)


def _declared(nodes: int = 4, **kwargs: object) -> Scenario:
    params: dict = dict(nodes=nodes, seed=3, duration=4.0, rate=20_000, tx_size=512, batch_bytes=100_000,
                        downlink_mbps=1000.0, warmup=1.0, drain=3.0)
    params.update(kwargs)
    return Scenario.build("bullshark", **params)


def test_declared_batches_reach_every_primary_and_commit_once_without_payload_bytes() -> None:
    sim = Simulation(_declared())
    result = sim.run()
    plane = sim.dataplane
    assert result.ok, result.violation_details
    assert plane is not None and plane.sealed > 0
    # 20,000 tx/s of 512 B over 4 nodes: 100 KB fill in 39 ms, so every batch is full (195.3 txs on average).
    assert {b.txs for b in plane.batches.values()} == {195, 196} and plane.interval == pytest.approx(0.039, abs=1e-3)
    # Everyone stored everything (nobody withholds), and executed the same transactions.
    assert all(len(h) == plane.sealed for h in plane.holds)
    assert len(set(plane.executed)) == 1
    assert 0.8 * 20_000 < plane.throughput() < 1.2 * 20_000
    assert 0.97 * 20_000 < plane.goodput() <= 1.01 * 20_000  # every tx the window offered, committed
    assert plane.latencies and max(plane.latencies) < 3.0
    # Batches cost bandwidth but not the consensus frames' bytes: headers carry 32-byte digests only.
    assert result.bytes < plane.sealed * 100_000 / 10
    heights = [len(n.instances[0].log) for n in sim.nodes]
    assert min(heights) > 5


def test_hooks_translate_the_nodes_worker_messages() -> None:
    hooks = DeclaredWorkers()
    stored = hooks.stored(b"d" * 32, 10, 5120, True)
    assert isinstance(stored, BatchStored) and stored.own and stored.ref.size == 5120 and stored.ref.txs == 10
    assert hooks.command(object()) is None


def test_calibrated_cpu_slows_commits_at_a_node_that_must_verify_every_certificate() -> None:
    plain = Simulation(_declared(nodes=7))
    plain.run()
    slow = CpuCosts(sign=2e-4, verify=2e-3, hash_per_byte=2e-9)  # 2 ms a signature: 10 ms per certificate
    charged = Simulation(_declared(nodes=7, cpu=slow))
    result = charged.run()
    assert result.ok, result.violation_details
    cpu = charged.cpu
    assert cpu is not None and cpu.busy[0][PRIMARY] > 1.0  # seconds of simulated primary CPU
    assert cpu.busy[0][WORKER] == pytest.approx(sum(b.size for b in charged.dataplane.batches.values()) * 2e-9)
    assert sorted(charged.dataplane.latencies)[len(charged.dataplane.latencies) // 2] > \
        sorted(plain.dataplane.latencies)[len(plain.dataplane.latencies) // 2] + 0.05


@pytest.mark.parametrize("seed", range(12))
def test_scale_mode_with_equivocating_and_withholding_nodes_has_no_violations(seed: int) -> None:
    sc = _declared(nodes=7, byzantine=2, behaviour="equivocate,withhold", seed=seed, duration=3.0,
                   cpu=CpuCosts(sign=1.6e-5, verify=4e-5, hash_per_byte=1e-9))
    assert sorted(sc.byzantine.values()) == ["equivocate", "withhold"]
    sim = Simulation(sc)
    result = sim.run()
    assert result.ok, result.violation_details
    plane = sim.dataplane
    withholder = next(i for i, b in sc.byzantine.items() if b == "withhold")
    assert all(plane.batches[d].origin != withholder for i in sc.correct for d in plane.holds[i])
    assert plane.throughput() > 0 and min(len(sim.nodes[i].instances[0].log) for i in sc.correct) > 3


def test_batches_of_correct_nodes_left_uncommitted_are_liveness_violations() -> None:
    result = Simulation(_declared(duration=1.0, warmup=0.0, drain=0.0)).run()  # no time to commit the last ones
    assert result.violations["liveness"] == 4 and not result.ok
    assert "declared batches of correct nodes not committed" in result.violation_details[0]


def test_an_overloaded_link_throttles_clients_as_the_workers_backpressure_does() -> None:
    # 20,000 tx/s of 512 B is 82 Mbit/s a node must receive; the links carry 20.
    sim = Simulation(_declared(bandwidth_mbps=20.0, downlink_mbps=20.0, duration=5.0, warmup=2.0, drain=10.0))
    result = sim.run()
    plane = sim.dataplane
    assert result.ok, result.violation_details
    assert plane.throttled_txs > 0 and max(plane.inflight) <= plane.max_inflight
    # Each node's uplink carries its batches to 3 peers: the cluster commits at most 4/3 of one link.
    assert 0 < plane.throughput() < 1.05 * 4 / 3 * 20e6 / 8 / 512 < 20_000
