"""Close calls timed on the request's sample (`refine.py`): what is timed, what is not, and what it corrects."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from dwcp.compression import oracle, refine
from dwcp.compression.codecs import CODED, KEYS, OPTIONS
from dwcp.compression.corpus import FAMILIES
from dwcp.compression.costmodel import Link
from dwcp.compression.features import FEATURE_NAMES
from dwcp.compression.refine import Refiner
from dwcp.compression.selector import Request, Selector
from dwcp.compression.settings import CompressionSettings
from dwcp.runtime.inventory import InventoryError, parse_inventory

SAMPLE = FAMILIES["code"](np.random.default_rng(3), 16 << 10)
FAST = Link(1000.0, 0.0)  # 1 Gbit/s, no RTT: a 16 KiB chunk's compress time matters as much as its wire time


class PlantedModel:
    """Predicts the measured properties of SAMPLE (relative to the calibration), with errors planted per option."""

    options = tuple(o.key for o in CODED)
    features = FEATURE_NAMES
    version = "planted"

    def __init__(self, m: oracle.Measurement, calibration, vc_factor: dict[str, float] | None = None) -> None:
        log_vc = np.log(m.vc[1:] / calibration.vc[1:])
        for key, factor in (vc_factor or {}).items():
            log_vc[KEYS.index(key) - 1] += math.log(factor)
        self.out = (np.log(m.ratio[1:])[None], log_vc[None], np.log(m.vd[1:] / calibration.vd[1:])[None])

    def predict(self, x):
        return self.out


@pytest.fixture(scope="module")
def truth() -> oracle.Measurement:
    """SAMPLE measured whole, with the benchmark oracle's turns."""
    return oracle.measure(SAMPLE, pilot=False)


def true_seconds(m: oracle.Measurement, r: Request) -> np.ndarray:
    return oracle.times(m, r.size_bytes, r.link, r.chunk_bytes)


def measured_options(monkeypatch) -> list[str]:
    """Every option the refiner times from now on, in order."""
    seen: list[str] = []
    measure = oracle.measure

    def recording(data, options=OPTIONS, **kw):
        seen.extend(o.key for o in options)
        return measure(data, options=options, **kw)

    monkeypatch.setattr(refine.oracle, "measure", recording)
    return seen


def test_a_close_call_with_a_mispredicted_speed_is_corrected_by_the_measurement(calibration, truth):
    r = Request(SAMPLE, len(SAMPLE), FAST)
    t = true_seconds(truth, r)
    # zstd-19 predicted ~3000x faster than it runs (the clip's bound): it compresses best, so the model picks it.
    model = PlantedModel(truth, calibration, {"zstd-19": 1e4})
    plain = Selector(model, calibration).choose([r])[0]
    assert plain.option.key == "zstd-19" and t[plain.index] > 2 * t.min()  # the plant makes a bad miss
    refined = Selector(model, calibration, Refiner(0.5, 0.05)).choose([r])[0]
    assert refined.refined and refined.timed >= 2 and refined.refine_cpu > 0
    assert t[refined.index] <= oracle.NEAR_BEST * t.min()  # near-best by the careful truth


def test_a_clear_call_costs_no_timing(calibration, truth):
    reads = []

    def clock() -> int:
        reads.append(1)
        return 0

    # A 100 Gbit/s link: 16 KiB cross in 1.3 us, sent as is; every codec spends tens of us on it.
    r = Request(SAMPLE, len(SAMPLE), Link(100_000.0, 0.0))
    model = PlantedModel(truth, calibration)
    refiner = Refiner(0.1, 0.05, clock=clock)
    t = true_seconds(truth, r)
    assert list(
        refiner.close_calls(
            t,
            r.size_bytes,
            r.chunk_bytes,
            truth.ratio,
            truth.vc,
            truth.vd,
            (r.link.bandwidth_bps, r.link.rtt_s, r.link.loss_rate),
        )
    ) == [KEYS.index("none")]
    c = Selector(model, calibration, refiner).choose([r])[0]
    assert not c.refined and c.timed == 0 and c.refine_cpu == 0.0 and reads == []
    assert c.index == Selector(model, calibration).choose([r])[0].index


def test_the_budget_is_honoured_an_expensive_option_is_not_timed(calibration, truth, monkeypatch):
    seen = measured_options(monkeypatch)
    r = Request(SAMPLE, len(SAMPLE), Link(20.0, 0.0))
    # Every option a rival (e^3: predictions 20x off either way), brotli-11 predicted as measured (~10 ms here).
    refiner = Refiner(3.0, 0.004)
    c = Selector(PlantedModel(truth, calibration), calibration, refiner).choose([r])[0]
    assert c.refined and seen and "brotli-11" not in seen and "zstd-19" not in seen
    assert c.refine_cpu < 2 * 0.004  # checked before each option against its predicted cost: no 10 ms option
    assert refine.timing_cost(len(SAMPLE), truth.vc[KEYS.index("brotli-11")], truth.vd[KEYS.index("brotli-11")]) > 0.004


def test_a_chunk_larger_than_the_sample_is_not_refined(calibration, truth, monkeypatch):
    """The sample is all of the payload the service sees: a 16 KiB piece measured whole is not a 1 MiB chunk, so
    timing it would answer another question; the model's pick stands, untimed."""
    seen = measured_options(monkeypatch)
    model = PlantedModel(truth, calibration, {"zstd-19": 1e4})
    r = Request(SAMPLE, 1 << 30, FAST, chunk_bytes=1 << 20)
    refined = Selector(model, calibration, Refiner(3.0, 1.0)).choose([r])
    assert refined == Selector(model, calibration).choose([r]) and not refined[0].refined and seen == []
    r = Request(SAMPLE, 1 << 30, FAST, chunk_bytes=4096)  # 4 KiB chunks: the sample holds four, measured as such
    assert Selector(model, calibration, Refiner(3.0, 1.0)).choose([r])[0].refined and seen


def test_the_measurement_is_rescaled_to_the_calibrated_host(calibration, truth, monkeypatch):
    refiner = Refiner(0.5, 0.05, pilot=3.0e8)
    assert refiner.pilot_per_canary > 0
    monkeypatch.setattr(
        refine.oracle,
        "measure",
        lambda *a, **k: oracle.Measurement(0, np.ones(1), np.ones(1), np.ones(1), canary=1.0e8),
    )
    monkeypatch.setattr(refine, "HOST_SECONDS", 0.0)
    assert refiner.host_scale() == pytest.approx(3.0e8 / (1.0e8 * refiner.pilot_per_canary))
    assert Refiner(0.5, 0.05).host_scale() == 1.0  # no calibration pilot: raw speeds


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("refine_margin", 0),
        ("refine_margin", -0.1),
        ("refine_margin", 50),
        ("refine_budget_ms", 0),
        ("refine_budget_ms", -1),
        ("refine_budget_ms", "fast"),
        ("refine", "sometimes"),
    ],
)
def test_bad_refine_settings_are_refused_naming_the_field(field, value):
    good = CompressionSettings(refine=True, refine_margin=0.3, refine_budget_ms=5)
    assert (good.refine, good.refine_margin, good.refine_budget_ms) == (True, 0.3, 5.0)
    with pytest.raises(ValidationError, match=field):
        CompressionSettings(**{field: value})
    inventory = {
        "name": "t",
        "services": {"compression": {"settings": {field: value}, "instances": [{"host": "127.0.0.1", "port": 5000}]}},
    }
    with pytest.raises(InventoryError, match=f"services.compression.settings.{field}"):
        parse_inventory(inventory)
    with pytest.raises(ValueError, match="margin"):
        Refiner(0.0, 0.001)
    with pytest.raises(ValueError, match="budget"):
        Refiner(0.2, -1.0)


def test_predict_says_whether_the_pick_was_refined(make_client):
    import base64

    c, registry, _ = make_client(shadow_fraction=0.0, refine=True, refine_margin=3.0, refine_budget_ms=20.0)
    body = {
        "sample": base64.b64encode(SAMPLE).decode(),
        "size_bytes": len(SAMPLE),
        "bandwidth_mbps": 1000.0,
        "rtt_ms": 0.0,
    }
    with c:
        one = c.post("/v1/predict", json=body).json()
        assert one["refined"] is True
        large = c.post("/v1/predict", json={**body, "size_bytes": 1 << 30}).json()  # 1 MiB chunks of a 16 KiB sample
        assert large["refined"] is False
        assert registry.get_sample_value("compression_selector_refined_requests_total") == 1
        assert registry.get_sample_value("compression_selector_refine_options_timed_total") >= 2
        assert registry.get_sample_value("compression_selector_refine_cpu_seconds_total") > 0
    off, registry, _ = make_client(shadow_fraction=0.0)
    with off:
        assert off.post("/v1/predict", json=body).json()["refined"] is False
        assert registry.get_sample_value("compression_selector_refined_requests_total") == 0


def test_the_shadow_never_refines_a_rescoped_question(make_client, monkeypatch):
    """A chunk larger than the sample is served the model's pick (not refined), so the gauge's rescoped question is
    answered with the model's pick too: a refined one would score picks the service never serves."""
    import base64

    calls = []
    original = Refiner.refine
    monkeypatch.setattr(Refiner, "refine", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    c, _, app = make_client(shadow_fraction=1.0, shadow_max_per_second=1000.0, refine=True, refine_margin=3.0)
    body = {"sample": base64.b64encode(SAMPLE).decode(), "size_bytes": 1 << 30, "bandwidth_mbps": 1000.0, "rtt_ms": 0.0}
    with c:
        assert c.post("/v1/predict", json=body).json()["refined"] is False
        app.state.shadow.drain()
        stats = c.get("/v1/shadow").json()
    assert stats["evaluated"] == 1 and stats["rescoped"] == 1 and calls == []
