"""The shadow evaluator re-scores live requests with the oracle and drives compression_selector_accuracy."""

import random

from dwcp.compression.codecs import KEYS
from dwcp.compression.costmodel import Link
from dwcp.compression.selector import Request
from dwcp.compression.shadow import Job, ShadowEvaluator

from .test_api import GOOD

ZEROS = bytes(32768)
SLOW = Link(1.0, 50.0)
ZEROS_1MIB = Request(ZEROS, 1 << 20, SLOW)  # a 1 MiB payload of zeros, one default chunk, over 1 Mbit/s
TINY = Request(ZEROS, 32768, SLOW)


def evaluator(**kw) -> ShadowEvaluator:
    args = {"fraction": 1.0, "window": 4, "max_per_second": 1e6, "rng": random.Random(0), **kw}
    return ShadowEvaluator(**args)


def test_scores_fold_into_the_rolling_accuracy():
    ev = evaluator()
    assert ev.accuracy() is None
    # Zeros over 1 Mbit/s: sending them raw ("none") is hundreds of times slower than any codec.
    assert not ev.evaluate(Job(ZEROS_1MIB, KEYS.index("none"))).near_best
    assert ev.accuracy() == 0.0
    ev.evaluate(Job(ZEROS_1MIB, KEYS.index("zstd-3")))
    ev.evaluate(Job(ZEROS_1MIB, KEYS.index("zstd-9")))
    stats = ev.stats()
    assert stats["evaluated"] == 3 and stats["window"] == 3
    assert stats["accuracy"] == ev.accuracy()
    assert 0.0 < stats["accuracy"] <= 2 / 3 + 1e-9


def test_offer_respects_fraction_rate_cap_and_queue():
    assert not evaluator(fraction=0.0).offer(TINY, 0)
    capped = evaluator(max_per_second=0.001)
    assert capped.offer(TINY, 0) and not capped.offer(TINY, 0)
    assert capped.dropped == 1
    full = evaluator(queue_size=1)
    assert full.offer(TINY, 0) and not full.offer(TINY, 0)


def test_worker_thread_updates_the_accuracy_gauge(make_client):
    c, registry, app = make_client(shadow_fraction=1.0, shadow_max_per_second=1000.0, shadow_queue=64)
    with c:
        for _ in range(5):
            assert c.post("/v1/predict", json=GOOD).status_code == 200
        app.state.shadow.drain()
        evaluated = registry.get_sample_value("compression_selector_shadow_evaluations_total")
        assert evaluated is not None and evaluated >= 1
        accuracy = registry.get_sample_value("compression_selector_accuracy")
        assert accuracy is not None and 0.0 <= accuracy <= 1.0
        assert accuracy == app.state.shadow.accuracy()
        assert c.get("/v1/shadow").json()["evaluated"] == evaluated
        assert "compression_selector_accuracy " in c.get("/metrics").text


def test_scores_use_speeds_rescaled_to_the_calibrated_host(monkeypatch):
    from dwcp.compression import oracle

    seen = []
    real_times = oracle.times
    monkeypatch.setattr(oracle, "times", lambda m, *a: seen.append(m) or real_times(m, *a))
    ev = evaluator()
    ev.pilot = 1e12  # a calibration on a host far faster than this one: every speed scales up alike
    ev.evaluate(Job(ZEROS_1MIB, KEYS.index("zstd-3")))
    m = seen[0]
    assert m.pilot == 1e12 and (m.vc[1:] > 1e9).all()


def test_the_pilot_is_timed_at_most_every_pilot_every_seconds(monkeypatch):
    from dwcp.compression import oracle

    pilots, scored = [], []
    real_measure, real_times = oracle.measure, oracle.times
    monkeypatch.setattr(oracle, "measure", lambda data, **k: pilots.append(k["pilot"]) or real_measure(data, **k))
    monkeypatch.setattr(oracle, "times", lambda m, *a: scored.append(m) or real_times(m, *a))
    ev = evaluator(pilot_every=3600.0)
    ev.pilot = 1e12
    for _ in range(3):
        ev.evaluate(Job(ZEROS_1MIB, KEYS.index("zstd-3")))
    assert pilots[0] is True and pilots[1:] == [False, False]
    # In between, the kept reading rescales: every evaluation's speeds are at the calibrated host's.
    assert all(m.pilot == 1e12 and (m.vc[1:] > 1e9).all() for m in scored)
    ev.pilot_every = 0.0
    ev.evaluate(Job(ZEROS_1MIB, KEYS.index("zstd-3")))
    assert pilots[-1] is True
    uncalibrated = evaluator()  # no calibration pilot to rescale to: never pays for the pilot
    uncalibrated.evaluate(Job(ZEROS_1MIB, KEYS.index("zstd-3")))
    assert pilots[-1] is False


def test_the_oracle_measures_at_the_request_chunk(monkeypatch):
    """Truth and prediction answer the same question: a request sent in 4 KiB chunks is measured on 4 KiB
    chunks of its sample, and scored with that chunk in the cost model."""
    from dwcp.compression import oracle

    chunks, scored = [], []
    real_measure, real_times = oracle.measure, oracle.times
    monkeypatch.setattr(oracle, "measure", lambda data, **k: chunks.append(k["chunk"]) or real_measure(data, **k))
    monkeypatch.setattr(oracle, "times", lambda m, *a: scored.append(a) or real_times(m, *a))
    ev = evaluator()
    ev.evaluate(Job(Request(ZEROS, 1 << 30, SLOW, 4096), KEYS.index("zstd-3")))
    ev.evaluate(Job(Request(ZEROS, 20_000_000, SLOW), KEYS.index("zstd-3")))
    assert chunks == [4096, 1 << 20]  # the default chunk is larger than the sample: measured whole
    assert scored == [(1 << 30, SLOW, 4096), (20_000_000, SLOW, 1 << 20)]


def test_a_chunk_larger_than_its_sample_is_scored_at_the_sample_size_with_the_selector_s_choice_for_it(monkeypatch):
    """No truth exists for a 1 MiB chunk of a payload the service saw 32 KiB of: the evaluator asks its selector
    what it would pick were the payload sent in 32 KiB chunks, measures 32 KiB, and scores that pick. A request
    whose chunk its sample covers is scored as offered."""
    from dwcp.compression import oracle

    chunks, scored, asked = [], [], []
    real_measure, real_times = oracle.measure, oracle.times
    monkeypatch.setattr(oracle, "measure", lambda data, **k: chunks.append(k["chunk"]) or real_measure(data, **k))
    monkeypatch.setattr(oracle, "times", lambda m, *a: scored.append(a) or real_times(m, *a))
    ev = evaluator(choose=lambda r: asked.append(r) or KEYS.index("none"))
    first = ev.evaluate(Job(Request(ZEROS, 1 << 30, SLOW), KEYS.index("zstd-3")))
    assert asked == [Request(ZEROS, 1 << 30, SLOW, len(ZEROS))]
    assert chunks == [len(ZEROS)] and scored == [(1 << 30, SLOW, len(ZEROS))]
    assert not first.near_best  # the re-asked pick ("none" for zeros over 1 Mbit/s) was scored, not zstd-3
    ev.evaluate(Job(Request(ZEROS, 1 << 30, SLOW, 4096), KEYS.index("zstd-3")))
    assert len(asked) == 1 and chunks[-1] == 4096 and scored[-1] == (1 << 30, SLOW, 4096)
    assert ev.stats()["rescoped"] == 1 and ev.stats()["evaluated"] == 2
