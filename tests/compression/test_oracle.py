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
