"""The network model: latency from the region matrix, serialisation on the sender's uplink, FIFO
links, loss, partitions, and the region presets."""

from __future__ import annotations

import random

import pytest

from dwcp.consensus.sim.network import REGIONS, WAN_RTT_MS, NetworkModel, pick_regions


def _net(**kwargs: float) -> NetworkModel:
    return NetworkModel(["us-east-1", "eu-west-1", "us-east-1"], random.Random(1), **kwargs)


def test_rtt_matrix_is_symmetric_and_complete() -> None:
    for a in REGIONS:
        assert WAN_RTT_MS[(a, a)] == 1.0
        for b in REGIONS:
            assert WAN_RTT_MS[(a, b)] == WAN_RTT_MS[(b, a)] > 0


def test_delay_is_half_the_rtt_plus_serialisation_without_jitter() -> None:
    net = _net(jitter=0.0, bandwidth_bps=8e6)  # 1 byte per microsecond
    assert net.transmit(0.0, 0, 1, 1000) == pytest.approx(0.001 + 0.068 / 2)
    assert net.transmit(10.0, 0, 2, 0) == pytest.approx(10.0 + 0.0005)


def test_copies_queue_on_the_senders_uplink() -> None:
    net = _net(jitter=0.0, bandwidth_bps=8e6)
    first = net.transmit(0.0, 0, 2, 10_000)  # 10 ms on the wire
    second = net.transmit(0.0, 0, 1, 10_000)  # waits for the first copy
    assert first == pytest.approx(0.010 + 0.0005)
    assert second == pytest.approx(0.020 + 0.034)
    assert net.transmit(0.0, 1, 0, 10_000) == pytest.approx(0.010 + 0.034)  # another uplink is free


def test_links_stay_fifo_under_jitter() -> None:
    net = _net(jitter=2.0)
    arrivals = [net.transmit(i * 1e-4, 0, 1, 100) for i in range(500)]
    assert arrivals == sorted(arrivals)
    assert max(arrivals) > 0.034 * 2  # jitter did stretch some deliveries


def test_loss_drops_about_the_configured_share() -> None:
    net = _net(loss=0.2)
    lost = sum(net.transmit(0.0, 0, 1, 10) is None for _ in range(5000))
    assert 800 < lost < 1200


def test_partition_cuts_links_until_heal() -> None:
    net = _net()
    net.partition([(0,)])
    assert net.transmit(0.0, 0, 1, 10) is None and not net.connected(0, 2)
    assert net.connected(1, 2) and net.transmit(0.0, 1, 2, 10) is not None
    assert net.partitioned
    net.heal()
    assert net.transmit(0.0, 0, 1, 10) is not None and not net.partitioned


def test_an_isolated_node_stays_cut_through_partitions_and_heals_until_it_rejoins() -> None:
    net = _net()
    net.isolate(1)
    assert net.transmit(0.0, 1, 0, 10) is None and net.transmit(0.0, 0, 1, 10) is None
    assert net.connected(0, 2) and not net.connected(1, 2)
    net.partition([(0,)])  # 0 alone, 1 and 2 on the other side, 1 still isolated
    assert not net.connected(1, 2) and not net.connected(0, 2)
    net.rejoin(1)  # back on the partition's side of 2
    assert net.connected(1, 2) and not net.connected(0, 1)
    net.isolate(1)
    net.heal()
    assert not net.connected(0, 1) and net.connected(0, 2)
    net.rejoin(1)
    assert net.connected(0, 1) and net.connected(1, 2) and net.transmit(0.0, 1, 0, 10) is not None
    net.partition([(1, 2)])
    net.rejoin(1)  # not isolated: stays on its partition's side
    assert net.connected(1, 2) and not net.connected(0, 1)


def test_spread_places_nodes_round_robin() -> None:
    net = NetworkModel.spread(5, ("us-east-1", "ap-northeast-1"), random.Random(0))
    assert list(net.placement) == ["us-east-1", "ap-northeast-1"] * 2 + ["us-east-1"]
    assert net.one_way(0, 1) == pytest.approx(0.145 / 2)


@pytest.mark.parametrize(("spec", "expected"), [
    ("2", ("us-east-1", "eu-west-1")), (1, ("us-east-1",)), ("lan", ("us-east-1",)),
    ("sa-east-1, ap-southeast-2", ("sa-east-1", "ap-southeast-2")),
])
def test_pick_regions(spec: str | int, expected: tuple[str, ...]) -> None:
    assert pick_regions(spec) == expected


@pytest.mark.parametrize("spec", ["0", "9", "mars-1", ""])
def test_pick_regions_rejects_nonsense(spec: str) -> None:
    with pytest.raises(ValueError, match="--regions"):
        pick_regions(spec)
