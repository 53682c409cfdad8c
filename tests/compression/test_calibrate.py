"""Calibration keeps each option's fastest speed over repeated runs (the VM's speed modes switch over seconds)."""

import json

import numpy as np
import pytest

from dwcp.compression import calibrate
from dwcp.compression.codecs import OPTIONS
from dwcp.compression.oracle import Measurement


def test_repeats_keep_each_options_fastest_speed(monkeypatch):
    n = len(OPTIONS)
    slow, fast = np.full(n, 100.0), np.full(n, 140.0)
    # Run 1 fast for the first half of the options, run 2 fast for the rest, run 3 slow throughout.
    runs = iter([
        Measurement(10, np.full(n, 0.5), np.where(np.arange(n) < n // 2, fast, slow), slow, 120.0),
        Measurement(10, np.full(n, 0.5), np.where(np.arange(n) < n // 2, slow, fast), fast, 140.0),
        Measurement(10, np.full(n, 0.5), slow, slow, 100.0),
    ])
    monkeypatch.setattr(calibrate, "measure", lambda *a, **k: next(runs))
    cal = calibrate.run(repeats=3, chunk_repeats=0)
    assert (cal.vc == 140.0).all() and (cal.vd == 140.0).all() and (cal.ratio == 0.5).all()
    assert cal.pilot == 140.0  # the host's fastest pilot speed: the speed truths are rescaled to


def test_one_repeat_is_one_measurement(monkeypatch):
    calls = []
    n = len(OPTIONS)
    monkeypatch.setattr(calibrate, "measure",
                        lambda *a, **k: calls.append(k) or Measurement(10, np.ones(n), np.ones(n), np.ones(n), 1.0))
    calibrate.run(repeats=1, chunk_repeats=0)
    assert len(calls) == 1 and calls[0]["rounds"] == 3


def test_pilot_speed_survives_the_file_and_old_files_are_redone(calibration, tmp_path, monkeypatch):
    path = tmp_path / "cal.json"
    calibrate.save(calibration, path)
    assert calibrate.load(path).pilot == calibration.pilot
    doc = json.loads(path.read_text())
    doc["format"] = "dwcp-compression-calibration/1"  # before the pilot: no speed to rescale truths to
    del doc["pilot_bps"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="calibration"):
        calibrate.load(path)
    monkeypatch.setattr(calibrate, "run", lambda **k: calibration)
    cal, ran = calibrate.load_or_run(path)
    assert ran and cal.pilot == calibration.pilot and calibrate.load(path).pilot == calibration.pilot


def test_chunk_speeds_keep_each_sizes_fastest_and_survive_the_file(calibration, tmp_path, monkeypatch):
    """Format /3: compress speeds per chunk size (1-64 KiB) on a fixed block, fastest of `chunk_repeats`; their shape
    is log(speed on chunks / speed on the reference array). A /2 file still reads, without them."""
    n = len(OPTIONS)
    chunked = []

    def fake(data, options, **k):
        if "chunk" not in k:
            return Measurement(len(data), np.full(n, 0.5), np.full(n, 1000.0), np.full(n, 2000.0), 10.0)
        chunked.append((k["chunk"], len(data)))
        slow = len(chunked) % 2  # alternate repeats slow and fast: the fastest must be kept
        return Measurement(len(data), np.full(n, 0.5), np.full(n, k["chunk"] / (2.0 if slow else 1.0)),
                           np.full(n, 1.0), 10.0)

    monkeypatch.setattr(calibrate, "measure", fake)
    cal = calibrate.run(repeats=1, chunk_repeats=2)
    assert [c for c, _ in chunked] == [1 << b for b in calibrate.CHUNK_LOG2 for _ in range(2)]
    assert {size for _, size in chunked} == {len(calibrate.chunk_block())} == {65536}
    assert np.allclose(cal.chunk_shape()[:, 1:], np.log([[(1 << b) / 1000.0] for b in calibrate.CHUNK_LOG2]))
    assert (cal.chunk_shape()[:, 0] == 0).all()  # `none`
    path = tmp_path / "cal.json"
    calibrate.save(cal, path)
    assert json.loads(path.read_text())["format"] == "dwcp-compression-calibration/3"
    back = calibrate.load(path)
    assert np.array_equal(back.chunk_vc, cal.chunk_vc) and np.array_equal(back.chunk_shape(), cal.chunk_shape())
    doc = json.loads(path.read_text())
    doc["chunks"]["block_sha256"] = "0" * 64  # measured on some other block: not comparable
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="chunk"):
        calibrate.load(path)
    calibrate.save(calibration, path)  # no chunk speeds: written as /2
    assert json.loads(path.read_text())["format"] == "dwcp-compression-calibration/2"
    assert calibrate.load(path).chunk_vc is None and calibrate.load(path).chunk_shape() is None


def test_the_service_measures_chunk_speeds_only_for_a_model_that_compares_them(calibration, tmp_path, monkeypatch):
    """Per-chunk speeds double a calibration's time and only `selector.ChunkShift` reads them: the shipped artifact
    (no reference shape) is served on a calibration without them, and a stored one without them is kept; a model
    stamped with a reference shape makes a stored calibration without them run again, with them."""
    import dataclasses

    from dwcp.compression import selector as selector_mod
    from dwcp.compression.model import Model

    runs = []
    chunked = dataclasses.replace(calibration, chunk_vc=np.ones((len(calibrate.CHUNK_LOG2), len(OPTIONS))))

    def fake_run(**k):
        runs.append(k.get("chunk_repeats", 3))
        return chunked if k.get("chunk_repeats", 3) else calibration

    monkeypatch.setattr(calibrate, "run", fake_run)
    path = tmp_path / "cal.json"
    shipped = selector_mod.load(None, path)
    assert runs == [0] and shipped.calibrated_now and not shipped.warning
    assert calibrate.load(path).chunk_vc is None
    assert not selector_mod.load(None, path).calibrated_now and runs == [0]  # stored, kept

    base = Model.load(selector_mod.DEFAULT_MODEL)
    ref = np.zeros((len(calibrate.CHUNK_LOG2), len(base.options)))
    dataclasses.replace(base, small=base.small.with_reference(calibrate.CHUNK_LOG2, ref), version="").save(
        tmp_path / "stamped.npz")
    stamped = selector_mod.load(tmp_path / "stamped.npz", path)
    assert runs == [0, 3] and stamped.calibrated_now and calibrate.load(path).chunk_vc is not None
    assert not selector_mod.load(tmp_path / "stamped.npz", path).calibrated_now and runs == [0, 3]
    assert not selector_mod.load(None, path).calibrated_now  # a file with chunk speeds serves any model
