"""The pipeline's codec costs (costs.py): which codec moves a raw byte soonest, from measured figures."""

from __future__ import annotations

import pytest

from dwcp.manager.costs import PipelineCosts, Sampled, on_sample

NS = 1e-9
MIB = 1 << 20


def measured(share: float, *, comp: dict[str, float], dec: dict[str, float], tx_rest: float = 1.5,
             rx_rest: float = 2.4, same_host: bool = True) -> PipelineCosts:
    """Costs as if chunks had been sent and acknowledged: per-byte figures in ns, one 4 MiB chunk each."""
    costs = PipelineCosts(streams=4, cpus=2)
    costs.same_host = same_host
    n = 4 * MIB
    for codec in ("none", *comp):
        costs.sent(codec, n, comp.get(codec, 0.0) * NS * n, tx_rest * NS * n, share * 0.01, 0.01)
        costs.acked(codec, n, {"cpu": (dec.get(codec, 0.0) + rx_rest) * NS * n, "dcpu": dec.get(codec, 0.0) * NS * n})
    return costs


def test_a_host_short_of_cpu_sends_uncompressed_where_an_idle_one_compresses_at_1000_mbit():
    lz4 = {"comp": {"lz4": 2.0}, "dec": {"lz4": 0.5}}
    gigabit = 125e6
    # idle: 2 cores; none is wire-bound at 8 ns/B, lz4 sends 0.62 of it (4.96 ns/B) on 3.2 ns/B of CPU
    assert measured(1.0, **lz4).fastest("lz4", {"lz4": 0.62}, gigabit) == "lz4"
    # both ends on one host that gives a stream thread 5% of a core: 4 streams, 0.2 cores; lz4's extra CPU
    # costs more than its smaller wire saves (none 3.9 / 0.2 = 19.5 ns/B, lz4 6.4 / 0.2 = 32 ns/B)
    assert measured(0.05, **lz4).fastest("lz4", {"lz4": 0.62}, gigabit) == "none"


def test_zstd_9_gives_way_to_zstd_3_when_its_cpu_not_the_link_sets_the_pace():
    zstd = {"comp": {"zstd-9": 25.0, "zstd-3": 10.0}, "dec": {"zstd-9": 1.0, "zstd-3": 1.0}}
    ratios = {"zstd-9": 0.41, "zstd-3": 0.42}
    # 100 Mbit/s on a loaded host (0.4 cores for both ends): zstd-9 needs 29.9 / 0.4 = 75 ns/B of CPU, zstd-3
    # 14.9 / 0.4 = 37 ns/B, both more than their wire time (33-34 ns/B)
    assert measured(0.1, **zstd).fastest("zstd-9", ratios, 12.5e6) == "zstd-3"
    # 10 Mbit/s: the wire (328-336 ns/B) is the pace for both, and zstd-9's better ratio wins
    assert measured(0.1, **zstd).fastest("zstd-9", ratios, 1.25e6) == "zstd-9"


def test_ends_on_separate_hosts_each_spend_their_own_cpu():
    lz4 = {"comp": {"lz4": 2.0}, "dec": {"lz4": 0.5}}
    costs = measured(0.05, **lz4)
    # one host: both ends' 6.4 ns/B on 0.2 cores; two hosts: the busier end's 3.5 ns/B on its 0.2 cores
    assert costs.seconds_per_byte("lz4", 0.62, 125e6, same_host=True) == pytest.approx(6.4 * NS / 0.2)
    assert costs.seconds_per_byte("lz4", 0.62, 125e6, same_host=False) == pytest.approx(3.5 * NS / 0.2)


def test_the_pick_is_kept_until_the_receiver_has_reported_its_cpu():
    costs = PipelineCosts(streams=4, cpus=2)
    costs.sent("lz4", 4 * MIB, 0.1, 0.1, 0.001, 0.01)
    costs.acked("lz4", 4 * MIB, {})  # a receiver that does not report its CPU
    assert costs.rx_rest is None
    assert not costs.ready()
    assert costs.fastest("lz4", {"lz4": 0.99}, 125e6) == "lz4"


def test_a_codec_not_timed_yet_is_priced_from_its_cpu_on_the_sample_scaled_to_the_measured_ones():
    costs = measured(1.0, comp={"zstd-3": 10.0}, dec={"zstd-3": 1.0})
    sampled = {"zstd-3": Sampled(0.4, 20 * NS, 4 * NS), "lz4": Sampled(0.6, 3 * NS, 1 * NS)}
    # zstd-3 ran at half its sample CPU compressing and a quarter decoding: lz4 is taken the same way
    assert costs.codec_cpu("lz4", sampled) == pytest.approx((1.5 * NS, 0.25 * NS))
    assert costs.codec_cpu("zstd-3", sampled) == pytest.approx((10 * NS, 1 * NS))  # measured: as measured
    assert costs.codec_cpu("none") == (0.0, 0.0)
    assert costs.codec_cpu("lz4") is None  # neither measured nor sampled: not priced


def test_a_sample_is_priced_by_compressing_and_decoding_it():
    text = b"the quick brown fox jumps over the lazy dog " * 400
    figures = on_sample(text, ("zstd-3", "lz4", "none"))
    assert figures["none"] == Sampled(1.0, 0.0, 0.0)
    assert 0 < figures["zstd-3"].ratio < figures["lz4"].ratio < 0.5
    assert figures["zstd-3"].comp > 0 and figures["lz4"].dec > 0


def test_a_receiver_whose_disk_sets_the_pace_gets_uncompressed_chunks():
    """Every codec writes the same raw bytes at the receiver: when making them durable is the slowest stage,
    compressing only spends CPU, so the tie goes to none."""
    costs = measured(1.0, comp={"lz4": 2.0}, dec={"lz4": 0.5})
    assert costs.fastest("lz4", {"lz4": 0.62}, 125e6) == "lz4"
    for _ in range(20):  # 4 MiB chunks taking 0.2 s each to write and fdatasync on one stream
        costs.acked("none", 4 * MIB, {"cpu": 0.01, "dcpu": 0.0, "io": 0.2})
    assert costs.rx_io == pytest.approx(0.2 / (4 * MIB))
    assert costs.fastest("lz4", {"lz4": 0.62}, 125e6) == "none"
