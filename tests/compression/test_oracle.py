"""The oracle: real codecs on real bytes, scored by the cost model."""

import numpy as np
import pytest

from dwcp.compression import oracle
from dwcp.compression.codecs import KEYS, OPTIONS
from dwcp.compression.costmodel import Link


def test_measure_round_trips_every_option_on_zeros():
    m = oracle.measure(bytes(65536), min_total=0.0)
    assert m.size == 65536 and m.ratio[0] == 1.0 and np.isinf(m.vc[0]) and np.isinf(m.vd[0])
    assert (m.ratio[1:] < 0.01).all()
    assert np.isfinite(m.vc[1:]).all() and (m.vc[1:] > 0).all()


def test_random_data_does_not_shrink():
    m = oracle.measure(np.random.default_rng(0).bytes(32768), min_total=0.0)
    assert (m.ratio[1:] > 0.99).all()


def test_oracle_picks_none_for_random_data_on_a_fast_link():
    m = oracle.measure(np.random.default_rng(1).bytes(65536), min_total=0.0)
    t = oracle.times(m, 65536, Link(10_000.0, 1.0))
    assert KEYS[int(t.argmin())] == "none"


def test_oracle_picks_compression_for_text_on_a_slow_link():
    data = b"the quick brown fox jumps over the lazy dog; " * 1500
    m = oracle.measure(data, min_total=0.0)
    t = oracle.times(m, len(data), Link(1.0, 50.0))
    assert OPTIONS[int(t.argmin())].codec != "none"
    assert t.min() < t[0] / 10


def test_score_is_near_best_within_five_percent():
    t = np.array([1.0, 1.04, 1.2])
    s = oracle.score(1, t)
    assert s.near_best and not s.exact_best and s.regret == pytest.approx(0.04)
    assert not oracle.score(2, t).near_best
    assert oracle.score(0, t).exact_best and oracle.score(0, t).regret == 0.0


def test_score_many_reports_accuracy_exact_best_and_regret():
    times = np.array([[1.0, 2.0], [1.0, 1.03], [2.0, 1.0], [1.0, 1.5]])
    got = oracle.score_many(np.array([0, 1, 0, 1]), times)
    assert got["n"] == 4
    assert got["accuracy"] == pytest.approx(0.5)  # rows 0 and 1
    assert got["exact_best"] == pytest.approx(0.25)  # row 0
    assert got["mean_regret"] == pytest.approx((0.0 + 0.03 + 1.0 + 0.5) / 4)


# ---- timing mechanics, on a fake clock (nanoseconds) and fake functions whose call durations are scripted


class FakeClock:
    """Advances only when told; each read costs `read_ns` (the thread CPU clock is a system call here)."""

    def __init__(self, read_ns: int = 0) -> None:
        self.now, self.read_ns = 0, read_ns

    def __call__(self) -> int:
        self.now += self.read_ns
        return self.now


def scripted(clock: FakeClock, durations_ns: list[int], log: list | None = None, name: str = ""):
    """A function whose n-th call takes durations_ns[n] (the last one repeats)."""
    calls = iter(durations_ns)

    def fn(_data: bytes) -> bytes:
        clock.now += next(calls, durations_ns[-1])
        if log is not None:
            log.append(name)
        return b""

    return fn


def test_a_disturbed_sample_does_not_stick():
    clock = FakeClock()
    # First call 100 us, then a neighbour's burst (two calls at 300 us), then an undisturbed call again.
    fn = scripted(clock, [300_000, 300_000, 101_000, 50_000])
    timer = oracle.Timer(fn, b"", 100e-6, clock)
    oracle.run_turns([timer], budget=0.0, rounds=2, max_rounds=5, agree=0.03)
    assert timer.best == pytest.approx(100e-6) and len(timer.turns) == 4  # 100 and 101 agree: settled
    assert timer.batch == 1  # a call longer than SAMPLE_SECONDS is timed on its own


def test_turns_continue_until_the_two_fastest_agree():
    clock = FakeClock()
    fn = scripted(clock, [150_000, 130_000, 120_000, 119_000, 50_000])
    timer = oracle.Timer(fn, b"", 200e-6, clock)
    oracle.run_turns([timer], budget=0.0, rounds=2, max_rounds=10, agree=0.03)
    # 200 (first call), 150, 130, 120, 119: 120 and 119 agree within 3%, so the 50 us call never runs.
    assert len(timer.turns) == 5 and timer.best == pytest.approx(119e-6)


def test_turns_stop_at_max_rounds_and_never_before_rounds():
    clock = FakeClock()
    wild = oracle.Timer(scripted(clock, [100_000, 200_000]), b"", 400e-6, clock)
    oracle.run_turns([wild], budget=0.0, rounds=2, max_rounds=3, agree=0.03)
    assert len(wild.turns) == 1 + 3
    # A call shorter than a turn's budget: agrees at once, but `rounds` turns are the minimum.
    steady = oracle.Timer(scripted(clock, [100_000]), b"", 100e-6, clock)
    oracle.run_turns([steady], budget=0.001, rounds=2, max_rounds=9, agree=0.03)
    assert len(steady.turns) == 1 + 2
    # A call longer than a turn is its own sample: one more that agrees settles it.
    slow = oracle.Timer(scripted(clock, [2_000_000]), b"", 2e-3, clock)
    oracle.run_turns([slow], budget=0.001, rounds=2, max_rounds=9, agree=0.03)
    assert len(slow.turns) == 1 + 1


def test_turns_are_interleaved_and_rotate():
    clock, log = FakeClock(), []
    # Each first turn disagrees with the first call (200 vs 100 us), so each timer gets a second turn.
    a = oracle.Timer(scripted(clock, [200_000, 100_000], log, "a"), b"", 100e-6, clock)
    b = oracle.Timer(scripted(clock, [200_000, 100_000], log, "b"), b"", 100e-6, clock)
    c = oracle.Timer(scripted(clock, [200_000, 100_000], log, "c"), b"", 100e-6, clock)
    oracle.run_turns([a, b, c], budget=0.0, rounds=2, max_rounds=2, agree=0.03)
    assert log == ["a", "b", "c", "b", "c", "a"]


def test_batches_keep_the_clock_cost_out_of_fast_calls():
    # 100 ns per call, 500 ns per clock read: timing single calls would say 600 ns (6x too slow).
    clock = FakeClock(read_ns=500)
    fn = scripted(clock, [100])
    t0 = clock()
    fn(b"")  # the round-trip call, timed alone as `measure` times it: 600 ns with the clock's reads
    timer = oracle.Timer(fn, b"", (clock() - t0) * 1e-9, clock)
    timer.turn(0.001)
    assert timer.best == pytest.approx(100e-9, rel=0.03)


def test_measure_times_every_option_with_the_given_clock():
    clock = FakeClock(read_ns=1000)  # codecs take no time on this clock: speed is set by the clock's reads
    m = oracle.measure(b"abc" * 1000, min_total=0.0, clock=clock, pilot=False)  # the pilot: test_pilot.py
    assert np.isinf(m.vc[0]) and np.isfinite(m.vc[1:]).all() and np.isfinite(m.vd[1:]).all()
    assert (m.ratio[1:] < 1.0).all()


def test_measure_in_chunks_compresses_each_chunk_on_its_own():
    """Chunks of 4 KiB of a repetitive 64 KiB payload: no chunk can refer back to an earlier one, so each
    pays for its own first copy of the pattern and the ratio is worse than the whole payload's."""
    data = (bytes(range(256)) * 16)[:4096] * 16
    whole = oracle.measure(data, min_total=0.0, pilot=False)
    chunked = oracle.measure(data, min_total=0.0, pilot=False, chunk=4096)
    zstd3 = KEYS.index("zstd-3")
    assert chunked.size == whole.size == len(data)
    assert chunked.ratio[zstd3] > 4 * whole.ratio[zstd3]
    assert oracle.measure(data, min_total=0.0, pilot=False, chunk=1 << 20).ratio[zstd3] == whole.ratio[zstd3]
