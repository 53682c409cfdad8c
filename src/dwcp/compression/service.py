"""The compression-api HTTP service: `/v1/predict`, `/v1/predict/batch`, `/v1/codecs`, `/v1/model`, `/v1/shadow`.

`/health`, `/metrics`, error bodies and request metrics come from `dwcp.runtime.app`. The predict handlers
read the raw body (msgspec, hand validation in `api.py`) and write the response with msgspec, because at
thousands of requests per second pydantic's per-request cost is larger than the prediction itself; for the
same reason they are answered ahead of FastAPI's middleware, routing and exception layers (`App.fast_post`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import msgspec
import numpy as np

from dwcp.compression import api, calibrate
from dwcp.compression.codecs import OPTIONS
from dwcp.compression.costmodel import Link
from dwcp.compression.fallback import ProbeModel
from dwcp.compression.features import N_FEATURES
from dwcp.compression.metrics import CompressionMetrics
from dwcp.compression.model import Model
from dwcp.compression.selector import DEFAULT_MODEL, Selector
from dwcp.compression.settings import CompressionSettings
from dwcp.compression.shadow import ShadowEvaluator
from dwcp.runtime.app import App, HealthResult, RawRequest, create_app
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.errors import ApiError

JSON = "application/json"
OCTETS = "application/octet-stream"
_encode = msgspec.json.Encoder().encode


@dataclass
class State:
    selector: Selector | None = None
    calibrated_now: bool = False
    warning: str = ""


def settings_of(ctx: ServiceContext) -> CompressionSettings:
    s = ctx.settings
    if isinstance(s, CompressionSettings):
        return s
    return CompressionSettings.model_validate(s or {})


def _media_type(request: RawRequest) -> str:
    return request.header(b"content-type").split(";", 1)[0].strip().lower()


def build_app(ctx: ServiceContext) -> App:
    settings = settings_of(ctx)
    state = State()
    shadow = ShadowEvaluator(fraction=settings.shadow_fraction, window=settings.accuracy_window,
                             max_per_second=settings.shadow_max_per_second, queue_size=settings.shadow_queue,
                             pilot_every=settings.shadow_pilot_seconds)
    metrics = CompressionMetrics(ctx.registry, shadow.accuracy)
    shadow._on_evaluated = lambda _score: metrics.shadow_evaluations.inc()
    cal_path = settings.calibration_path or calibrate.default_path(ctx.data_dir)
    model_path = settings.model_path or DEFAULT_MODEL
    max_sample = settings.max_sample_bytes
    # JSON bodies carry base64 (4/3 of the bytes) plus a few numbers per item.
    single_limit = max_sample * 4 // 3 + 4096
    batch_limit = settings.max_batch * single_limit

    async def startup() -> None:
        cal, ran = await asyncio.to_thread(calibrate.load_or_run, cal_path)
        state.calibrated_now = ran
        model: Model | ProbeModel
        try:
            model = Model.load(model_path)
            selector = Selector(model, cal)  # refuses a model made for other features or options
        except (OSError, ValueError, KeyError) as exc:
            # Serve on the probe heuristic rather than refuse: /health says degraded and why.
            model = ProbeModel(cal)
            selector = Selector(model, cal)
            state.warning = f"no usable trained model ({type(exc).__name__}: {exc}); using the probe fallback"
            ctx.logger.warning(state.warning)
        if model.reference_sha256 and model.reference_sha256 != cal.reference_sha256:
            state.warning = "calibration reference differs from the model's; recalibrate with this dwcp version"
            ctx.logger.warning(state.warning)
        state.selector = selector
        shadow.pilot = cal.pilot
        ctx.logger.info("selector ready", extra={"event": "selector_ready", "model": model.version,
                                                 "calibration": str(cal_path), "calibrated_now": ran})
        shadow.start()

    async def shutdown() -> None:
        await asyncio.to_thread(shadow.stop)

    def model_check() -> HealthResult:
        if state.selector is None:
            return HealthResult("down", "model not loaded")
        if state.warning:
            return HealthResult("degraded", state.warning)
        return HealthResult("ok", state.selector.version)

    app = create_app(ctx, title="DWCP compression selector", on_startup=[startup], on_shutdown=[shutdown],
                     description="Chooses the codec and level that minimise a payload's WAN transfer time.",
                     health_checks={"model": model_check})

    def selector() -> Selector:
        if state.selector is None:
            raise ApiError(503, "unavailable", "model not loaded yet")
        return state.selector

    def result(sel: Selector, idx: int, seconds: float) -> dict:
        opt = OPTIONS[idx]
        return {"codec": opt.codec, "level": opt.level, "predicted_seconds": seconds, "model_version": sel.version}

    def choose(items: list[api.Item]) -> tuple[np.ndarray, np.ndarray]:
        sel = selector()
        t0 = time.perf_counter()
        if len(items) == 1:  # the common call: plain floats, no per-request arrays for the link
            it = items[0]
            x = sel.extract(it.sample, it.size_bytes)[None, :]
            link = (it.size_bytes, it.bandwidth_mbps * 125_000.0, it.rtt_ms / 1e3, it.loss_rate)
        else:
            x = np.empty((len(items), N_FEATURES))
            for i, it in enumerate(items):
                sel.extract(it.sample, it.size_bytes, x[i])
            arr = np.array([(it.size_bytes, it.bandwidth_mbps * 125_000.0, it.rtt_ms / 1e3, it.loss_rate)
                            for it in items])
            link = (arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])
        idx, secs = sel.choose_features(x, *link)
        elapsed = time.perf_counter() - t0
        for _ in items:  # one observation per payload: batches report the per-item share
            metrics.prediction_duration.observe(elapsed / len(items))
        for i, it in zip(idx.tolist(), items, strict=True):
            metrics.by_option[i].inc()
            shadow.offer(it.sample, it.size_bytes, Link(it.bandwidth_mbps, it.rtt_ms, it.loss_rate), i)
        return idx, secs

    predict_doc = {
        "requestBody": {"required": True, "content": {
            JSON: {"schema": api.PredictRequest.model_json_schema()},
            OCTETS: {"schema": {"type": "string", "format": "binary"}},
        }},
        "parameters": [
            {"name": n, "in": "query", "required": n != "loss_rate", "schema": {"type": t},
             "description": "only with application/octet-stream"}
            for n, t in (("size_bytes", "integer"), ("bandwidth_mbps", "number"), ("rtt_ms", "number"),
                         ("loss_rate", "number"))
        ],
    }

    async def predict(request: RawRequest) -> bytes:
        media = _media_type(request)
        if media == JSON:
            obj = api.decode_json(await request.body(single_limit, "sample"))
            item = api.parse_object(obj, max_sample)
        elif media == OCTETS:
            raw = await request.body(max_sample, "sample")
            item = api.parse_query(raw, request.query(), max_sample)
        else:
            raise ApiError(415, "unsupported_media_type", f"content-type must be {JSON} or {OCTETS}",
                           "content-type")
        idx, secs = choose([item])
        return _encode(result(selector(), int(idx[0]), float(secs[0])))

    # The two hot endpoints skip FastAPI's per-request layers (App.fast_post); these are their docs.
    app.fast_post("/v1/predict", predict, tags=["selector"], openapi_extra=predict_doc,
              responses={200: {"model": api.PredictResponse}}, summary="Choose the codec and level for one payload")

    batch_doc = {"requestBody": {"required": True, "content": {JSON: {"schema": api.BatchRequest.model_json_schema()}}}}

    async def predict_batch(request: RawRequest) -> bytes:
        if _media_type(request) != JSON:
            raise ApiError(415, "unsupported_media_type", f"content-type must be {JSON}", "content-type")
        obj = api.decode_json(await request.body(batch_limit, "sample"))
        if not isinstance(obj, dict) or "items" not in obj:
            raise ApiError(422, "invalid_input", "items: field required", "items")
        raw = obj["items"]
        if not isinstance(raw, list) or not raw:
            raise ApiError(422, "invalid_input", "items: must be a non-empty list", "items")
        if len(raw) > settings.max_batch:
            raise ApiError(413, "payload_too_large", f"items: at most {settings.max_batch} per call", "items")
        items = [api.parse_object(o, max_sample, f"items.{i}.") for i, o in enumerate(raw)]
        idx, secs = choose(items)
        sel = selector()
        body = {"results": [result(sel, i, s) for i, s in zip(idx.tolist(), secs.tolist(), strict=True)],
                "model_version": sel.version}
        return _encode(body)

    app.fast_post("/v1/predict/batch", predict_batch, tags=["selector"], openapi_extra=batch_doc,
              responses={200: {"model": api.BatchResponse}}, summary="Choose for up to 256 payloads at once")

    @app.get("/v1/codecs", tags=["selector"], response_model=api.CodecsResponse, summary="Options the selector uses")
    async def codecs() -> dict:
        return {"codecs": [{"codec": o.codec, "level": o.level} for o in OPTIONS]}

    @app.get("/v1/model", tags=["selector"], summary="Loaded model and calibration")
    async def model_info() -> dict:
        sel = selector()
        return {"model_version": sel.version, "model_path": str(model_path), "features": list(sel.model.features),
                "training": sel.model.training, "calibration": {
                    "path": str(cal_path), "host": sel.calibration.host, "created": sel.calibration.created,
                    "calibrated_at_start": state.calibrated_now}}

    @app.get("/v1/shadow", tags=["selector"], summary="Online accuracy from shadow oracle evaluations")
    async def shadow_stats() -> dict:
        return shadow.stats()

    app.state.shadow = shadow
    app.state.selector_state = state
    return app
