"""The pilot block: timed in the same turns as the payload, it carries the host's speed drift out of the truth."""

import math
import time

import numpy as np
import pytest

from dwcp.compression import oracle
from dwcp.compression.corpus import text
from dwcp.compression.oracle import Measurement
from dwcp.compression.train import Dataset

TEXT = text(np.random.default_rng(5), 65536)


def test_at_speed_rescales_every_speed_and_nothing_else():
    m = Measurement(100, np.array([1.0, 0.5]), np.array([np.inf, 10.0]), np.array([np.inf, 40.0]), 100.0)
    fast = m.at_speed(250.0)
    assert fast.vc[1] == 25.0 and fast.vd[1] == 100.0 and np.isinf(fast.vc[0])
    assert (fast.ratio == m.ratio).all() and fast.pilot == 250.0 and fast.size == 100
    unknown = Measurement(100, m.ratio, m.vc, m.vd)  # no pilot timed: nothing to rescale by
    assert unknown.at_speed(250.0) is unknown and m.at_speed(math.nan) is m


def test_measure_times_the_pilot_only_when_asked():
    assert np.isfinite(oracle.measure(TEXT[:3000], min_total=0.0).pilot)
    assert math.isnan(oracle.measure(TEXT[:3000], min_total=0.0, pilot=False).pilot)


def test_a_host_four_times_slower_is_rescaled_back():
    # A clock running 4x fast is a host 4x slower for every codec, payload and pilot alike. One pair of 1 ms-turn
    # measurements on a shared 2-core host under the suite's parallel load reads the rescaled speed 0.7-1.45x (CI
    # once 1.43, where this test asked for 1.0 +- 30%): the median of three pairs, and the claim the pilot is for,
    # that rescaling removes most of the slowdown (raw ~0.25x, i.e. -1.4 in log).
    raws, backs = [], []
    for _ in range(3):
        normal = oracle.measure(TEXT, min_total=0.001)
        slow = oracle.measure(TEXT, min_total=0.001, clock=lambda: 4 * time.thread_time_ns())
        raws.append(float(np.exp(np.mean(np.log(slow.vc[1:] / normal.vc[1:])))))
        rescaled = slow.at_speed(normal.pilot)
        backs.append(float(np.exp(np.mean(np.log(rescaled.vc[1:] / normal.vc[1:])))))
    raw, back = float(np.median(raws)), float(np.median(backs))
    assert raw < 0.5
    assert abs(math.log(back)) < 0.5 * abs(math.log(raw))  # within 0.5-2x of the truth, where raw is ~4x off


def test_datasets_keep_the_pilot_and_rescale_rows_that_have_one(tmp_path, calibration):
    n = 8
    ds = Dataset(
        np.zeros((2, 3)),
        np.full((2, n), 0.5),
        np.full((2, n), 100.0),
        np.full((2, n), 200.0),
        np.array([10, 10]),
        np.array(["a", "b"]),
        np.array([0, 1]),
        np.array([50.0, np.nan]),
    )
    at = ds.at_speed(150.0)
    assert (at.vc[0] == 300.0).all() and (at.vd[0] == 600.0).all()
    assert (at.vc[1] == 100.0).all()  # labelled without a pilot: as measured
    ds.save(tmp_path / "d.npz")
    back = Dataset.load(tmp_path / "d.npz")
    assert back.pilot[0] == 50.0 and math.isnan(back.pilot[1])
    np.savez_compressed(
        tmp_path / "old.npz", x=ds.x, ratio=ds.ratio, vc=ds.vc, vd=ds.vd, size=ds.size, family=ds.family, item=ds.item
    )
    assert np.isnan(Dataset.load(tmp_path / "old.npz").pilot).all()
    # Training targets are the rescaled speeds relative to the calibration's.
    y = ds.targets(calibration)
    k = n - 1
    assert y[0, k] == pytest.approx(math.log(100.0 * calibration.pilot / 50.0 / calibration.vc[1]))
    assert y[1, k] == pytest.approx(math.log(100.0 / calibration.vc[1]))


def test_the_canary_is_timed_with_the_pilot_or_alone_and_is_never_rescaled():
    """The canary (zstd-1 on the pilot block) comes free with the pilot, costs a couple of timers alone, and is
    timed even when the options measured leave zstd-1 out (a miss's confirmation)."""
    from dwcp.compression.codecs import BY_KEY

    with_pilot = oracle.measure(TEXT[:3000], min_total=0.0)
    alone = oracle.measure(TEXT[:3000], min_total=0.0, pilot=False, canary=True)
    without_zstd1 = oracle.measure(TEXT[:3000], options=(BY_KEY["lz4"],), min_total=0.0, pilot=False, canary=True)
    assert np.isfinite(with_pilot.canary) and np.isfinite(alone.canary) and np.isfinite(without_zstd1.canary)
    assert math.isnan(alone.pilot) and math.isnan(oracle.measure(TEXT[:3000], min_total=0.0, pilot=False).canary)
    assert with_pilot.at_speed(1.0).canary == with_pilot.canary
