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


def test_a_none_pick_steps_up_to_a_codec_when_the_link_not_the_cpu_sets_the_pace():
    """Session 6's 1000 Mbit/s large bucket went all `none` while zstd-3 moved it 1.17x faster: the pricing now
    also looks up the LADDER. Figures of that run: sender zstd-3 3.6 ns/B + 0.9 rest, receiver 1.3 + 2.9, a
    stream thread at 46% of a core (1.84 cores for 4 streams), the link at 8 ns/B."""
    run_a = {"comp": {"zstd-3": 3.6, "lz4": 2.8}, "dec": {"zstd-3": 1.3, "lz4": 1.9}}
    costs = measured(0.46, tx_rest=0.9, rx_rest=2.9, **run_a)
    gigabit = 125e6
    ratios = {"lz4": 0.39, "zstd-3": 0.31}
    # none: the wire's 8 ns/B; zstd-3 8.7 ns/B of CPU on 1.84 cores = 4.7 ns/B; lz4 8.5 / 1.84 = 4.6 ns/B
    assert costs.fastest("none", ratios, gigabit) == "lz4"
    assert costs.fastest("none", {"zstd-3": 0.31}, gigabit) == "zstd-3"
    # the same host giving a stream thread 15% of a core (0.6 cores): the CPU, not the link, is the pace and
    # every codec is slower than none
    assert measured(0.15, tx_rest=0.9, rx_rest=2.9, **run_a).fastest("none", ratios, gigabit) == "none"
    # incompressible data (every codec at ~1.0 on the sample) never steps up
    assert costs.fastest("none", {"lz4": 1.0, "zstd-3": 0.999}, gigabit) == "none"


def test_a_heavier_codec_must_beat_the_pick_by_the_margin_with_its_cpu_taken_one_and_a_half_times():
    slow = 12.5e6  # 100 Mbit/s: 80 ns per raw byte uncompressed
    # session 7's 100 Mbit/s large bucket: zstd-9 at 38.7 ns/B compressing, a host giving 1.9 cores
    zstd = {"comp": {"zstd-9": 38.7, "zstd-3": 5.8, "zstd-1": 3.3},
            "dec": {"zstd-9": 1.5, "zstd-3": 1.5, "zstd-1": 1.3}}
    costs = measured(0.474, tx_rest=1.1, rx_rest=5.4, **zstd)
    # zstd-1 -> zstd-3 for a 6% smaller wire: zstd-3's CPU (13.8 ns/B on 1.9 cores, 1.5x: 10.4 ns/B) is far below
    # its wire time (32.4 ns/B): taken
    assert costs.fastest("zstd-1", {"zstd-1": 0.43, "zstd-3": 0.405}, slow) == "zstd-3"
    # zstd-3 -> zstd-9 for a 10% smaller wire: zstd-9's CPU x 1.5 (~36 ns/B) is above its wire (29 ns/B) and
    # zstd-3's 32.4: not taken, though at its estimated CPU (24.6 ns/B) it would be link-bound
    assert costs.fastest("zstd-3", {"zstd-3": 0.405, "zstd-9": 0.365}, slow) == "zstd-3"
    # a 2% smaller wire is inside UP_MARGIN whatever the CPU
    assert costs.fastest("zstd-1", {"zstd-1": 0.43, "zstd-3": 0.42}, slow) == "zstd-1"
    # at 10 Mbit/s the link is the pace for zstd-9 even at 1.5x its CPU: a 10% smaller wire is taken
    assert costs.fastest("zstd-3", {"zstd-3": 0.405, "zstd-9": 0.365}, 1.25e6) == "zstd-9"


def test_the_ladder_steps_down_below_a_pick_off_it_and_never_up_to_one():
    from dwcp.manager.costs import LADDER, candidates

    assert candidates("zstd-19") == ("zstd-19", *reversed(LADDER))
    assert candidates("none") == LADDER
    assert "zstd-19" not in candidates("zstd-9") and "brotli-11" not in candidates("none")


def test_a_lighter_codec_must_beat_a_link_bound_pick_by_the_margin():
    """Session 8, 100 Mbit/s medium bucket: the 16 KiB sample read zstd-1 and zstd-3 within 1% of each other
    (0.630 vs 0.636 of raw), both link-bound, and the tie went to zstd-1, which sent 27% more bytes than zstd-3
    on the whole 1.6 MiB chunk. Told apart by the sample's ratios alone, the lighter codec must be DOWN_MARGIN
    faster."""
    zstd = {"comp": {"zstd-3": 6.0, "zstd-1": 3.0}, "dec": {"zstd-3": 1.5, "zstd-1": 1.3}}
    costs = measured(1.0, tx_rest=1.1, rx_rest=5.4, **zstd)
    slow = 12.5e6
    assert costs.fastest("zstd-3", {"zstd-3": 0.636, "zstd-1": 0.630}, slow) == "zstd-3"
    # a lighter codec the sample prices 10% faster on the same link is still taken
    assert costs.fastest("zstd-3", {"zstd-3": 0.636, "zstd-1": 0.57}, slow) == "zstd-1"
    # where the CPU, not the link, sets the pick's pace (1000 Mbit/s, a host giving a stream 10% of a core),
    # the lighter codecs' smaller CPU counts as before: none's 6.5 ns/B on 0.4 cores (16 ns/B) beats zstd-3's 35
    loaded = measured(0.1, tx_rest=1.1, rx_rest=5.4, **zstd)
    assert loaded.fastest("zstd-3", {"zstd-3": 0.636, "zstd-1": 0.630}, 125e6) == "none"


def test_a_step_up_must_save_more_than_compressing_the_first_chunk_with_it_costs():
    """Session 8, 100 Mbit/s medium bucket: a 1.6 MiB one-chunk object went zstd-9 for a 9% smaller wire
    (~2 ms of wire time), spent 76 ms compressing, and finished last. Pipelined, zstd-9 is priced link-bound
    and 7% sooner; the chunk a stream starts with waits for its whole compression first."""
    zstd = {"comp": {"zstd-9": 21.0, "zstd-3": 6.0}, "dec": {"zstd-9": 1.5, "zstd-3": 1.5}}
    costs = measured(1.0, tx_rest=1.1, rx_rest=5.4, **zstd)
    slow, chunk = 12.5e6, 1_655_172
    ratios = {"zstd-3": 0.27, "zstd-9": 0.248}
    assert costs.fastest("zstd-3", ratios, slow) == "zstd-9"  # the pipelined price alone steps up
    # a one-chunk object: 1.5 ns/B saved on 1.6 MB (2.5 ms) against (1.5 x 21 - 6) ns/B on it (42 ms)
    assert costs.fastest("zstd-3", ratios, slow, chunk_bytes=chunk, remaining_bytes=chunk) == "zstd-3"
    # the first chunk of 64 MiB to go: 100 ms saved, worth the 42 ms wait
    assert costs.fastest("zstd-3", ratios, slow, chunk_bytes=chunk, remaining_bytes=64 * MIB) == "zstd-9"


def test_a_heavier_codec_that_cannot_pay_whatever_its_ratio_is_not_sampled():
    """Session 9: at 1000 Mbit/s the CPU sets the pace and every one-chunk 4 MiB object compressed its 16 KiB sample
    with zstd-3 and zstd-9 (0.1-0.6 ms of CPU before its first byte) for a step up the pricing then refused. Priced
    with no wire time at all and the least CPU it can cost (the heaviest lighter codec's), zstd-3 is still slower
    than zstd-1 here: neither it nor zstd-9 is sampled. On a 10 Mbit/s link they can pay and are."""
    costs = measured(0.5, tx_rest=0.9, rx_rest=2.9, comp={"zstd-1": 2.5, "lz4": 1.5}, dec={"zstd-1": 1.0, "lz4": 0.7})
    chunk = 4 * MIB
    asked: list[str] = []
    on_the_sample = {"zstd-3": Sampled(0.36, 4.0 * NS, 1.0 * NS), "zstd-9": Sampled(0.34, 12.0 * NS, 1.0 * NS)}
    sampled: dict[str, Sampled] = {"zstd-1": Sampled(0.42, 2.5 * NS, 1.0 * NS)}

    def sample_up(codec: str) -> float:
        asked.append(codec)
        sampled[codec] = on_the_sample[codec]
        return sampled[codec].ratio

    # zstd-1 3.65 ns/B on 2 cores (its wire 3.4); zstd-3 at zstd-1's CPU x 1.5 and no wire is 3.78 ns/B
    assert costs.fastest("zstd-1", {"zstd-1": 0.42}, 125e6, sampled, chunk_bytes=chunk, remaining_bytes=chunk,
                         sample_up=sample_up) == "zstd-1"
    assert asked == []
    assert costs.cannot_pay("zstd-9", "zstd-1", 3.65 * NS, chunk, chunk, sampled)
    # 10 Mbit/s: zstd-1 is link-bound at 336 ns/B; both heavier codecs may pay, so both are sampled
    assert costs.fastest("zstd-1", {"zstd-1": 0.42}, 1.25e6, sampled, chunk_bytes=chunk, remaining_bytes=chunk,
                         sample_up=sample_up) == "zstd-9"
    assert asked == ["zstd-3", "zstd-9"]


def test_none_is_sooner_without_a_sample_only_when_the_picks_cpu_alone_outlasts_sending_raw():
    """`none_sooner`, the CPU guard of an object decided without pricing (batch.DECIDE_MIN_WIRE_S): the pick priced
    with nothing left to send (ratio 0) from its measured CPU, against none's wire and CPU."""
    zstd1 = {"comp": {"zstd-1": 4.0}, "dec": {"zstd-1": 1.0}}
    gigabit = 125e6
    # a twentieth of a core per stream (0.2 cores): zstd-1's 8.9 ns/B of CPU alone is 44.5 ns/B, none 19.5 ns/B
    assert measured(0.05, **zstd1).none_sooner("zstd-1", gigabit)
    # an idle host (2 cores): zstd-1 at most 4.45 ns/B of CPU, none 8 ns/B on the wire: compressing may pay
    assert not measured(1.0, **zstd1).none_sooner("zstd-1", gigabit)
    # a codec not measured yet (no sample is compressed to find out), and none itself, keep the pick
    assert not measured(0.05, **zstd1).none_sooner("zstd-3", gigabit)
    assert not measured(0.05, **zstd1).none_sooner("none", gigabit)
