"""The HTTP contract of compression-api, and every bad input answered with a JSON error naming the field."""

import base64
import gc
import json
import time

import numpy as np
import pytest

from dwcp.compression.codecs import OPTIONS

TEXT = (b"2026-11-25T18:00:00Z INFO request served path=/v1/items status=200 ms=3.1\n" * 60)[:4096]
B64 = base64.b64encode(TEXT).decode()
GOOD = {"sample": B64, "size_bytes": 1 << 20, "bandwidth_mbps": 50.0, "rtt_ms": 40.0}
CODECS = {"none", "lz4", "zstd", "brotli"}


def check_result(r: dict) -> None:
    assert set(r) == {"codec", "level", "predicted_seconds", "model_version"}
    assert r["codec"] in CODECS and (r["level"] is None or isinstance(r["level"], int))
    assert (r["codec"], r["level"]) in {(o.codec, o.level) for o in OPTIONS}
    assert r["predicted_seconds"] > 0 and r["model_version"]


def test_codecs_lists_the_registry(client):
    body = client.get("/v1/codecs").json()
    assert body == {"codecs": [{"codec": o.codec, "level": o.level} for o in OPTIONS]}
    names = {c["codec"] for c in body["codecs"]}
    assert names == CODECS and {"codec": "zstd", "level": 3} in body["codecs"]


def test_predict_json(client):
    r = client.post("/v1/predict", json=GOOD)
    assert r.status_code == 200, r.text
    check_result(r.json())
    lossy = client.post("/v1/predict", json={**GOOD, "loss_rate": 0.01})
    assert lossy.status_code == 200
    # Loss lowers the effective bandwidth (Mathis), so the same payload takes longer.
    assert lossy.json()["predicted_seconds"] > r.json()["predicted_seconds"]


def test_predict_octet_stream_with_query_fields(client):
    r = client.post("/v1/predict/raw", content=TEXT, headers={"content-type": "application/octet-stream"},
                    params={"size_bytes": 1 << 20, "bandwidth_mbps": 50, "rtt_ms": 40, "loss_rate": 0})
    assert r.status_code == 200, r.text
    check_result(r.json())


def test_chunk_bytes_is_optional_and_defaults_to_the_manager_chunk(client):
    from dwcp.compression.costmodel import DEFAULT_CHUNK_BYTES

    big = {**GOOD, "size_bytes": 1 << 30}
    default = client.post("/v1/predict", json=big).json()
    assert client.post("/v1/predict", json={**big, "chunk_bytes": DEFAULT_CHUNK_BYTES}).json() == default
    small = client.post("/v1/predict", json={**big, "chunk_bytes": 4096})
    assert small.status_code == 200
    check_result(small.json())
    octets = client.post("/v1/predict/raw", content=TEXT, headers={"content-type": "application/octet-stream"},
                         params={"size_bytes": 1 << 30, "bandwidth_mbps": 50, "rtt_ms": 40, "chunk_bytes": 4096})
    assert octets.json() == small.json()
    whole = client.post("/v1/predict/batch", json={"items": [{**GOOD, "chunk_bytes": 1 << 20}, big]})
    assert whole.status_code == 200
    second = whole.json()["results"][1]
    assert (second["codec"], second["level"]) == (default["codec"], default["level"])
    assert second["predicted_seconds"] == pytest.approx(default["predicted_seconds"], rel=1e-6)  # float32 batch


def test_slow_link_compresses_fast_link_does_not_for_random_data(client):
    rnd = base64.b64encode(np.random.default_rng(0).bytes(4096)).decode()
    fast = client.post("/v1/predict", json={**GOOD, "sample": rnd, "bandwidth_mbps": 10_000, "rtt_ms": 0.2})
    # Nothing to gain from compressing; only options at least as fast as the wire are acceptable.
    assert (fast.json()["codec"], fast.json()["level"]) not in {("zstd", 9), ("zstd", 19), ("brotli", 11)}
    slow = client.post("/v1/predict", json={**GOOD, "bandwidth_mbps": 1, "rtt_ms": 100})
    assert slow.json()["codec"] != "none"


def test_batch_of_256(client):
    items = [{**GOOD, "bandwidth_mbps": float(1 + i * 40)} for i in range(256)]
    r = client.post("/v1/predict/batch", json={"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 256 and body["model_version"]
    for res in body["results"]:
        check_result(res)
    too_many = client.post("/v1/predict/batch", json={"items": items + items[:1]})
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "items"


def test_metrics_count_predictions(make_client):
    c, registry, _ = make_client(shadow_fraction=0.0)
    with c:
        for _ in range(3):
            assert c.post("/v1/predict", json=GOOD).status_code == 200
        assert c.post("/v1/predict/batch", json={"items": [GOOD, GOOD]}).status_code == 200
        assert registry.get_sample_value("compression_selector_prediction_duration_seconds_count") == 5
        by_codec = [registry.get_sample_value("compression_selector_predictions_total", {"codec": o.key}) or 0
                    for o in OPTIONS]
        assert sum(by_codec) == 5
        text = c.get("/metrics").text
        assert "compression_selector_prediction_duration_seconds_bucket" in text
        assert "compression_selector_accuracy " not in text  # nothing shadow-evaluated yet
        assert registry.get_sample_value("compression_selector_prediction_cpu_seconds_count") == 5
        assert "compression_selector_prediction_cpu_seconds_bucket" in text


def test_a_prediction_that_waits_shows_in_wall_time_and_not_in_cpu_time(make_client, monkeypatch):
    """PredictionLatencyHigh's question, where the time went: a prediction held up (here a sleep, live the
    host's run queue or the GIL) counts in the wall-clock histogram, its CPU-time twin shows the work alone."""
    from dwcp.compression.selector import Selector

    real = Selector.choose

    def held_up(self, requests):
        time.sleep(0.03)
        return real(self, requests)

    monkeypatch.setattr(Selector, "choose", held_up)
    c, registry, _ = make_client(shadow_fraction=0.0)
    with c:
        assert c.post("/v1/predict", json=GOOD).status_code == 200
        wall = registry.get_sample_value("compression_selector_prediction_duration_seconds_sum")
        cpu = registry.get_sample_value("compression_selector_prediction_cpu_seconds_sum")
        assert wall >= 0.03 and cpu < 0.02
        under_25ms = {"le": "0.025"}
        assert registry.get_sample_value("compression_selector_prediction_duration_seconds_bucket", under_25ms) == 0
        assert registry.get_sample_value("compression_selector_prediction_cpu_seconds_bucket", under_25ms) == 1


def test_the_service_leaves_what_it_loaded_at_start_out_of_garbage_collections(make_client):
    """A full collection walks every tracked object (the web stack, numpy, the model: ~90 ms here) inside
    whichever prediction triggers it; what was loaded at start lives as long as the process, so it is frozen."""
    gc.unfreeze()
    c, _, _ = make_client(shadow_fraction=0.0)
    try:
        with c:
            assert gc.get_freeze_count() > 10_000
            assert c.post("/v1/predict", json=GOOD).status_code == 200
    finally:
        gc.unfreeze()


OVER = base64.b64encode(bytes(65537)).decode()
BAD_JSON = [
    ({k: v for k, v in GOOD.items() if k != "sample"}, 422, "sample"),
    ({k: v for k, v in GOOD.items() if k != "size_bytes"}, 422, "size_bytes"),
    ({k: v for k, v in GOOD.items() if k != "bandwidth_mbps"}, 422, "bandwidth_mbps"),
    ({k: v for k, v in GOOD.items() if k != "rtt_ms"}, 422, "rtt_ms"),
    ({**GOOD, "bandwidth_mbps": -5}, 422, "bandwidth_mbps"),
    ({**GOOD, "bandwidth_mbps": 0}, 422, "bandwidth_mbps"),
    ({**GOOD, "bandwidth_mbps": "fast"}, 422, "bandwidth_mbps"),
    ({**GOOD, "rtt_ms": -1}, 422, "rtt_ms"),
    ({**GOOD, "loss_rate": 1.5}, 422, "loss_rate"),
    ({**GOOD, "loss_rate": -0.1}, 422, "loss_rate"),
    ({**GOOD, "size_bytes": 0}, 422, "size_bytes"),
    ({**GOOD, "size_bytes": 10.5}, 422, "size_bytes"),
    ({**GOOD, "size_bytes": True}, 422, "size_bytes"),
    ({**GOOD, "size_bytes": 1 << 50}, 422, "size_bytes"),  # past 1 PiB
    ({**GOOD, "bandwidth_mbps": 5e-324}, 422, "bandwidth_mbps"),  # made predicted_seconds null (inf)
    ({**GOOD, "bandwidth_mbps": 1e9}, 422, "bandwidth_mbps"),
    ({**GOOD, "rtt_ms": 1e9}, 422, "rtt_ms"),
    ({**GOOD, "sample": "not base64!!"}, 422, "sample"),
    ({**GOOD, "sample": "QUI"}, 422, "sample"),  # missing padding
    ({**GOOD, "sample": "QU=I"}, 422, "sample"),  # padding inside
    ({**GOOD, "sample": "QUJD="}, 422, "sample"),  # "=" after a whole group (binascii's strict mode let it in)
    ({**GOOD, "sample": "QUJD\n"}, 422, "sample"),  # whitespace
    ({**GOOD, "sample": 12}, 422, "sample"),
    ({**GOOD, "sample": ""}, 422, "sample"),
    ({**GOOD, "sample": OVER, "size_bytes": 1 << 20}, 413, "sample"),
    ({**GOOD, "codec": "zstd"}, 422, "codec"),
    ({**GOOD, "chunk_bytes": 0}, 422, "chunk_bytes"),
    ({**GOOD, "chunk_bytes": -4096}, 422, "chunk_bytes"),
    ({**GOOD, "chunk_bytes": 4096.5}, 422, "chunk_bytes"),
    ({**GOOD, "chunk_bytes": "1MiB"}, 422, "chunk_bytes"),
    ({**GOOD, "chunk_bytes": True}, 422, "chunk_bytes"),
    ([GOOD], 422, "body"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_JSON)
def test_bad_json_input_names_the_field(client, body, status, field):
    r = client.post("/v1/predict", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and err["code"] and field in err["message"]


OCTETS = {"content-type": "application/octet-stream"}
BAD_OTHER = [
    ("/v1/predict", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "body"),
    ("/v1/predict", {"content": TEXT, "headers": {"content-type": "text/plain"}}, 415, "content-type"),
    ("/v1/predict", {"content": TEXT}, 415, "content-type"),
    ("/v1/predict/raw", {"content": TEXT, "headers": OCTETS, "params": {"size_bytes": 1 << 20, "rtt_ms": 1}}, 422,
     "bandwidth_mbps"),
    ("/v1/predict/raw", {"content": TEXT, "headers": OCTETS,
                     "params": {"size_bytes": 1 << 20, "bandwidth_mbps": "x", "rtt_ms": 1}}, 422, "bandwidth_mbps"),
    ("/v1/predict/raw", {"content": TEXT, "headers": OCTETS,
                     "params": {"size_bytes": 1 << 20, "bandwidth_mbps": -1, "rtt_ms": 1}}, 422, "bandwidth_mbps"),
    ("/v1/predict/raw", {"content": bytes(65537), "headers": OCTETS,
                     "params": {"size_bytes": 1 << 20, "bandwidth_mbps": 1, "rtt_ms": 1}}, 413, "sample"),
    ("/v1/predict/raw", {"content": TEXT, "headers": OCTETS,
                     "params": {"size_bytes": 1 << 20, "bandwidth_mbps": 1, "rtt_ms": 1, "speed": 2}}, 422, "speed"),
    ("/v1/predict/raw", {"content": TEXT, "headers": OCTETS,
                     "params": {"size_bytes": 1 << 20, "bandwidth_mbps": 1, "rtt_ms": 1, "chunk_bytes": 0}}, 422,
     "chunk_bytes"),
    ("/v1/predict/raw", {"content": TEXT, "headers": OCTETS,
                     "params": {"size_bytes": 1 << 20, "bandwidth_mbps": 1, "rtt_ms": 1, "chunk_bytes": "1.5"}}, 422,
     "chunk_bytes"),
    ("/v1/predict/batch", {"json": {"items": [GOOD], "verbose": True}}, 422, "verbose"),
    ("/v1/predict", {"content": TEXT, "headers": OCTETS}, 415, "content-type"),  # raw bytes go to /v1/predict/raw
    ("/v1/predict/batch", {"json": {"items": [GOOD, {**GOOD, "chunk_bytes": -1}]}}, 422, "items.1.chunk_bytes"),
    ("/v1/predict/batch", {"json": {"items": []}}, 422, "items"),
    ("/v1/predict/batch", {"json": {"things": [GOOD]}}, 422, "items"),
    ("/v1/predict/batch", {"json": {"items": [GOOD, GOOD, GOOD, {**GOOD, "bandwidth_mbps": -1}]}}, 422,
     "items.3.bandwidth_mbps"),
    ("/v1/predict/batch", {"json": {"items": [GOOD, {**GOOD, "sample": "%%"}]}}, 422, "items.1.sample"),
    ("/v1/predict/batch", {"content": TEXT, "headers": OCTETS}, 415, "content-type"),
]


@pytest.mark.parametrize(("path", "kwargs", "status", "field"), BAD_OTHER)
def test_bad_requests_name_the_field(client, path, kwargs, status, field):
    r = client.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field


def test_server_keeps_serving_after_bad_input(client):
    for body, _, _ in BAD_JSON:
        client.post("/v1/predict", json=body)
    for path, kwargs, _, _ in BAD_OTHER:
        client.post(path, **kwargs)
    assert client.post("/v1/predict", json=GOOD).status_code == 200
    assert client.get("/health").json()["status"] in ("ok", "degraded")


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/predict/batch", "/v1/codecs", "/health", "/metrics"} <= set(paths)


def test_missing_model_serves_the_probe_fallback_and_reports_degraded(make_client, tmp_path):
    c, _, _ = make_client(shadow_fraction=0.0, model_path=tmp_path / "absent.npz")
    with c:
        health = c.get("/health").json()
        assert health["status"] == "degraded" and "fallback" in health["checks"]["model"]["detail"]
        r = c.post("/v1/predict", json=GOOD)
        assert r.status_code == 200 and r.json()["model_version"] == "probe-fallback"


def test_model_for_other_features_is_refused_and_the_fallback_serves(make_client, tmp_path):
    """An artifact trained on another feature vector (an older build's) must not be fed this build's features."""
    import numpy as np

    from dwcp.compression.codecs import CODED
    from dwcp.compression.model import Model

    k, f = len(CODED), 19
    old = Model(tuple(f"old_{i}" for i in range(f)), tuple(o.key for o in CODED), np.zeros(f), np.ones(f),
                np.zeros(3 * k), np.ones(3 * k), [np.zeros((f, 3 * k))], [np.zeros(3 * k)])
    old.save(tmp_path / "old.npz")
    c, _, _ = make_client(shadow_fraction=0.0, model_path=tmp_path / "old.npz")
    with c:
        detail = c.get("/health").json()["checks"]["model"]["detail"]
        assert "old_0" in detail and "retrain" in detail and "fallback" in detail
        r = c.post("/v1/predict", json=GOOD)
        assert r.status_code == 200 and r.json()["model_version"] == "probe-fallback"


def test_missing_calibration_runs_one_on_start(make_client, tmp_path):
    path = tmp_path / "fresh" / "cal.json"
    c, _, _ = make_client(shadow_fraction=0.0, calibration_path=path)
    with c:
        assert path.exists()
        assert c.get("/v1/model").json()["calibration"]["calibrated_at_start"] is True


@pytest.fixture
def fast_and_routed(make_client):
    """The service as deployed, and the same service with its fast routes off (every request through FastAPI's
    router, the behaviour the fast path must reproduce); each with its registry."""
    fast, fast_reg, fast_app = make_client(shadow_fraction=0.0)
    routed, routed_reg, routed_app = make_client(shadow_fraction=0.0)
    assert set(fast_app.fast_routes) == {"/v1/predict", "/v1/predict/raw", "/v1/predict/batch"}
    routed_app.fast_routes.clear()
    with fast, routed:
        yield (fast, fast_reg), (routed, routed_reg)


def test_fast_path_answers_every_bad_input_exactly_as_the_router(fast_and_routed):
    (fast, _), (routed, _) = fast_and_routed
    cases = [("/v1/predict", {"json": body}) for body, _, _ in BAD_JSON] + [(p, kw) for p, kw, _, _ in BAD_OTHER]
    cases.append(("/v1/predict", {"json": GOOD, "headers": {"content-length": str(1 << 20)}}))  # declared too big
    for path, kwargs in cases:
        a, b = fast.post(path, **kwargs), routed.post(path, **kwargs)
        assert a.status_code >= 400 and a.json()["error"]["field"]
        assert (a.status_code, a.headers["content-type"], a.content) == (
            b.status_code, b.headers["content-type"], b.content), (path, kwargs)


def test_fast_path_answers_good_input_like_the_router(fast_and_routed):
    (fast, _), (routed, _) = fast_and_routed
    octets = {"content": TEXT, "headers": {"content-type": "application/octet-stream; charset=binary"},
              "params": {"size_bytes": 1 << 20, "bandwidth_mbps": 50, "rtt_ms": 40, "loss_rate": 0.001}}
    for path, kwargs in [("/v1/predict", {"json": GOOD}), ("/v1/predict/raw", octets),
                         ("/v1/predict/batch", {"json": {"items": [GOOD, {**GOOD, "loss_rate": 0.02}]}})]:
        a, b = fast.post(path, **kwargs), routed.post(path, **kwargs)
        assert a.status_code == b.status_code == 200, a.text
        assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
        assert int(a.headers["content-length"]) == len(a.content)
        results = a.json()["results"] if path.endswith("batch") else [a.json()]
        for r in results:
            check_result(r)
    # A repeated query parameter: the last value wins on both paths.
    twice = {**octets, "params": [*octets["params"].items(), ("rtt_ms", "-1")]}
    a, b = fast.post("/v1/predict/raw", **twice), routed.post("/v1/predict/raw", **twice)
    assert a.status_code == b.status_code == 422 and a.content == b.content


def test_fast_path_counts_requests_under_the_route_template(fast_and_routed):
    (fast, fast_reg), (routed, routed_reg) = fast_and_routed
    for client in (fast, routed):
        for _ in range(3):
            client.post("/v1/predict", json=GOOD)
        client.post("/v1/predict", json={**GOOD, "rtt_ms": -1})
        client.post("/v1/predict", content=TEXT)
        client.post("/v1/predict/batch", json={"items": [GOOD, GOOD]})
        client.post("/v1/predict/batch", json={"items": []})
    svc = {"service": "compression-api"}
    for labels, value in [
        ({"handler": "/v1/predict", "method": "POST", "code": "200"}, 3),
        ({"handler": "/v1/predict", "method": "POST", "code": "422"}, 1),
        ({"handler": "/v1/predict", "method": "POST", "code": "415"}, 1),
        ({"handler": "/v1/predict/batch", "method": "POST", "code": "200"}, 1),
        ({"handler": "/v1/predict/batch", "method": "POST", "code": "422"}, 1),
    ]:
        for reg in (fast_reg, routed_reg):
            assert reg.get_sample_value("dwcp_requests_total", {**svc, **labels}) == value, labels
    for reg in (fast_reg, routed_reg):
        assert reg.get_sample_value("dwcp_errors_total", {**svc, "handler": "/v1/predict", "kind": "client"}) == 2
        assert reg.get_sample_value("dwcp_request_duration_seconds_count",
                                    {**svc, "handler": "/v1/predict", "method": "POST"}) == 5
        assert reg.get_sample_value("compression_selector_prediction_duration_seconds_count") == 5


def test_fast_path_before_the_model_loads_answers_503_like_the_router(make_client):
    fast, _, _ = make_client(shadow_fraction=0.0)
    routed, _, app = make_client(shadow_fraction=0.0)
    app.fast_routes.clear()
    a, b = fast.post("/v1/predict", json=GOOD), routed.post("/v1/predict", json=GOOD)  # no lifespan: no model
    assert a.status_code == b.status_code == 503 and a.content == b.content
    assert a.json()["error"]["code"] == "unavailable"


def test_a_sample_longer_than_size_bytes_or_a_chunk_past_the_payload_is_the_payload(client):
    """No cross-field refusals the schema cannot state: the sample is part of the payload, so a larger sample
    says the payload is at least that big; a chunk larger than the payload is the payload."""
    whole = client.post("/v1/predict", json={**GOOD, "size_bytes": len(TEXT)})
    assert client.post("/v1/predict", json={**GOOD, "size_bytes": 100}).json() == whole.json()
    one_chunk = client.post("/v1/predict", json={**GOOD, "chunk_bytes": 1 << 20})
    assert client.post("/v1/predict", json={**GOOD, "chunk_bytes": (1 << 20) + 1}).json() == one_chunk.json()


def test_the_openapi_schemas_are_self_contained_and_state_the_bounds(client):
    doc = client.get("/openapi.json").json()
    batch = doc["paths"]["/v1/predict/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in json.dumps(batch) and batch["additionalProperties"] is False
    single = doc["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert single["properties"]["bandwidth_mbps"]["minimum"] == 0.001 and single["additionalProperties"] is False
    raw = doc["paths"]["/v1/predict/raw"]["post"]
    assert {p["name"] for p in raw["parameters"] if p["required"]} == {"size_bytes", "bandwidth_mbps", "rtt_ms"}


def test_the_sample_decoder_accepts_exactly_the_schemas_base64():
    """`sample` is decoded when and only when it matches the schema's BASE64_PATTERN (the empty string decodes to
    nothing and is refused as empty), to the bytes base64 says; fuzzed near the pattern's edges."""
    import os
    import random
    import re

    from dwcp.compression.api import decode_sample
    from dwcp.runtime.errors import ApiError
    from dwcp.runtime.patterns import BASE64_PATTERN

    pattern, rng = re.compile(BASE64_PATTERN), random.Random(4)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for _ in range(20000):
        text = base64.b64encode(os.urandom(rng.randint(0, 9))).decode()
        if rng.random() < 0.7:
            text = "".join(rng.choice(alphabet + "=\n -_.\x00") if rng.random() < 0.2 else c for c in text)
            text += rng.choice(["", "=", "==", "A", "AB=", "\n"])
        try:
            got = decode_sample(text, "sample", 65536)
        except ApiError as exc:
            assert exc.status == 422 and exc.field == "sample"
            got = None
        if pattern.fullmatch(text):
            assert got == base64.b64decode(text), text
        else:
            assert got is None or (text == "" and got == b""), text


def test_the_batch_and_single_endpoints_answer_the_same(client):
    """Every item of a batch gets the option /v1/predict and /v1/predict/raw give it alone (seconds to float32
    rounding: a batch runs the MLP on a matrix), over samples of every family and size, chunks and links."""
    from dwcp.compression.corpus import FAMILIES

    rng = np.random.default_rng(8)
    items = []
    for i, fam in enumerate(list(FAMILIES) * 3):
        sample = FAMILIES[fam](rng, int(2 ** rng.uniform(4, 16)))
        item = {"sample": base64.b64encode(sample).decode(), "size_bytes": int(2 ** rng.uniform(10, 36)),
                "bandwidth_mbps": float(10 ** rng.uniform(-1, 4)), "rtt_ms": float(rng.uniform(0, 300)),
                "loss_rate": float(rng.choice([0.0, 1e-4, 0.02]))}
        if i % 2:
            item["chunk_bytes"] = int(2 ** rng.uniform(10, 24))
        items.append(item)
    batch = client.post("/v1/predict/batch", json={"items": items})
    assert batch.status_code == 200, batch.text
    for item, together in zip(items, batch.json()["results"], strict=True):
        alone = client.post("/v1/predict", json=item).json()
        raw = client.post("/v1/predict/raw", content=base64.b64decode(item["sample"]), headers=OCTETS,
                          params={k: v for k, v in item.items() if k != "sample"}).json()
        assert alone == raw
        assert (together["codec"], together["level"]) == (alone["codec"], alone["level"])
        assert together["predicted_seconds"] == pytest.approx(alone["predicted_seconds"], rel=1e-5)
