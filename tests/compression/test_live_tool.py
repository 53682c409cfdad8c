"""The live gauge's question offline (benchmarks/compression_live.py) and the mix it asks it of (`load.items`)."""

import random

from dwcp.compression import load
from dwcp.compression.codecs import KEYS
from dwcp.compression.costmodel import DEFAULT_CHUNK_BYTES
from dwcp.compression.shadow import Job, ShadowEvaluator
from tests.benchmark_scripts import load_benchmark

from .test_shadow import ZEROS_1MIB


def test_items_are_the_mix_parsed_as_the_service_parses_it():
    items = load.items(5, 200)
    assert [(i, r) for i, r in items] == load.items(5, 200)  # a seed names the same items every time
    pool = load.payload_pool(5)
    chunked = 0
    for i, r in items:
        sample, size = pool[i]
        assert r.sample == sample and r.size_bytes == max(size, len(sample))
        assert 1 <= r.chunk_bytes <= r.size_bytes  # the API's parse: a chunk past the payload is the payload
        chunked += r.chunk_bytes not in (DEFAULT_CHUNK_BYTES, r.size_bytes)
        assert 0.1 <= r.link.rtt_ms <= 300 and 1 <= r.link.bandwidth_mbps <= 10_000
    assert chunked > 0  # a fifth of the items name a chunk
    assert load.pool_family(0) == "text" and load.pool_family(12) == "text"


def test_the_oracles_own_pick_is_judged_as_the_selectors():
    ev = ShadowEvaluator(fraction=1.0, window=4, max_per_second=1e6, rng=random.Random(0))
    r, chosen, rescoped = ev.question(Job(ZEROS_1MIB, KEYS.index("none")))
    assert (r, chosen, rescoped) == (ZEROS_1MIB, KEYS.index("none"), False)
    m, t = ev.truth(r)
    own, confirmed = ev.judge(r, int(t.argmin()), m, t)
    assert own.exact_best and own.near_best and not confirmed  # a hit is not timed again
    raw, confirmed = ev.judge(r, KEYS.index("none"), m, t)
    assert not raw.near_best and confirmed  # a miss is timed again before it counts
    assert ev.evaluated == 0  # judging folds nothing into the gauge's window


def test_the_live_tool_scores_the_gauge_and_the_oracle_on_the_same_items(calibration_file, monkeypatch):
    live = load_benchmark("compression_live")
    # Three items: small samples over a slow link keep the oracle's work to a second or two.
    monkeypatch.setattr(live.load, "items", lambda seed, n: [(6, r) for r in [ZEROS_1MIB] * n])
    args = live.parser().parse_args(
        ["3", "0", "--calibration", str(calibration_file), "--careful", "1", "--progress", "0", "--pilot-drift", "0.15"]
    )
    out = live.run(args)
    for p in out["passes"].values():  # each pass: its CPU per evaluation and the pilot readings it used
        assert p["evaluations"] == 3 and p["cpu_ms_per_evaluation"] > 0 and 0 <= p["repiloted"] <= 2
        assert p["pilot_readings_mbps"][0][1] > 0
    assert out["n"] == 3 and out["rescoped"] == 3  # a 32 KiB sample of a 1 MiB chunk: scored at the sample's size
    for key in ("gauge", "oracle_b_on_a", "oracle_a_on_b"):
        s = out["overall"][key]
        assert s["n"] == 3 and 0.0 <= s["accuracy"] <= 1.0 and s["misses"] == round(3 * (1 - s["accuracy"]))
    assert list(out["by_family"]) == ["pages"] and list(out["by_sample_bytes"]) == ["16-64 KiB"]


def test_an_artifact_compared_on_the_same_first_pass_scores_as_the_gauge(calibration_file, monkeypatch):
    from dwcp.compression.selector import DEFAULT_MODEL

    live = load_benchmark("compression_live")
    monkeypatch.setattr(live.load, "items", lambda seed, n: [(6, r) for r in [ZEROS_1MIB] * n])
    args = live.parser().parse_args(
        [
            "2",
            "0",
            "--calibration",
            str(calibration_file),
            "--compare",
            str(DEFAULT_MODEL),
            "--apart",
            "--careful",
            "0",
            "--progress",
            "0",
            "--pilot-drift",
            "inf",
        ]
    )
    out = live.run(args)
    assert out["apart"] and out["compare"] == out["model"]
    assert out["overall"]["compare"] == out["overall"]["gauge"]  # the same picks judged on the same truth


def test_every_item_is_scored_per_key_and_split_by_rescoping(calibration_file, monkeypatch):
    live = load_benchmark("compression_live")
    monkeypatch.setattr(live.load, "items", lambda seed, n: [(6, r) for r in [ZEROS_1MIB] * n])
    args = live.parser().parse_args(
        ["2", "0", "--calibration", str(calibration_file), "--careful", "0", "--progress", "0"]
    )
    out = live.run(args)
    assert len(out["near_best"]["gauge"]) == len(out["near_best"]["oracle_b_on_a"]) == 2  # per item, for pairing
    assert set(out["by_rescoped"]) == {"rescoped"}  # a 32 KiB sample of a 1 MiB chunk
    assert out["by_rescoped"]["rescoped"]["gauge"]["n"] == 2
