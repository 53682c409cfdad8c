"""Calibration keeps each option's fastest speed over repeated runs (the VM's speed modes switch over seconds)."""

import numpy as np

from dwcp.compression import calibrate
from dwcp.compression.codecs import OPTIONS
from dwcp.compression.oracle import Measurement


def test_repeats_keep_each_options_fastest_speed(monkeypatch):
    n = len(OPTIONS)
    slow, fast = np.full(n, 100.0), np.full(n, 140.0)
    # Run 1 fast for the first half of the options, run 2 fast for the rest, run 3 slow throughout.
    runs = iter([
        Measurement(10, np.full(n, 0.5), np.where(np.arange(n) < n // 2, fast, slow), slow),
        Measurement(10, np.full(n, 0.5), np.where(np.arange(n) < n // 2, slow, fast), fast),
        Measurement(10, np.full(n, 0.5), slow, slow),
    ])
    monkeypatch.setattr(calibrate, "measure", lambda *a, **k: next(runs))
    cal = calibrate.run(repeats=3)
    assert (cal.vc == 140.0).all() and (cal.vd == 140.0).all() and (cal.ratio == 0.5).all()


def test_one_repeat_is_one_measurement(monkeypatch):
    calls = []
    n = len(OPTIONS)
    monkeypatch.setattr(calibrate, "measure",
                        lambda *a, **k: calls.append(k) or Measurement(10, np.ones(n), np.ones(n), np.ones(n)))
    calibrate.run(repeats=1)
    assert len(calls) == 1 and calls[0]["rounds"] == 3
