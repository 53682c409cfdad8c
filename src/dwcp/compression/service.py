"""The compression-api HTTP service: `/v1/predict` (JSON), `/v1/predict/raw` (raw sample, link in the query),
`/v1/predict/batch`, `/v1/codecs`, `/v1/model`, `/v1/shadow`.

HTTP only: handlers parse (`api.py`), make one `Selector.choose` call for the request's items, record
metrics, offer the choices to the shadow evaluator and encode. Loading the model and calibration is
`selector.load`; the cost model and unit conversions are `costmodel.py`. `/health`, `/metrics`, error
bodies and request metrics come from `dwcp.runtime.app`. The predict handlers read the raw body (msgspec,
hand validation in `api.py`) and write the response with msgspec, because at thousands of requests per
second pydantic's per-request cost is larger than the prediction itself; for the same reason they are
answered ahead of FastAPI's middleware, routing and exception layers (`App.fast_post`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import msgspec

from dwcp.compression import api, calibrate, selector
from dwcp.compression.codecs import OPTIONS
from dwcp.compression.metrics import CompressionMetrics
from dwcp.compression.selector import Choice, Loaded, Request, Selector
from dwcp.compression.settings import CompressionSettings
from dwcp.compression.shadow import ShadowEvaluator
from dwcp.runtime.app import App, HealthResult, RawRequest, create_app, settle_heap
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.errors import ApiError

JSON = "application/json"
OCTETS = "application/octet-stream"
_encode = msgspec.json.Encoder().encode

# Each mode of a prediction has its own path, so each path's schema says exactly what it takes: JSON at
# /v1/predict, the raw sample at /v1/predict/raw with the link in the query.
PREDICT_DOC = {"requestBody": {"required": True, "content": {JSON: {"schema": api.predict_schema()}}}}
RAW_DOC = {
    "requestBody": {"required": True, "content": {OCTETS: {"schema": {
        "type": "string", "format": "binary", "minLength": 1, "maxLength": api.MAX_SAMPLE_BYTES}}}},
    "parameters": [{"name": name, "in": "query", "required": name in api.REQUIRED, "schema": schema}
                   for name, schema in api.predict_schema()["properties"].items() if name != "sample"],
}
BATCH_DOC = {"requestBody": {"required": True, "content": {JSON: {"schema": api.batch_schema()}}}}


@dataclass
class State:
    """Set once at startup; None until the model and calibration are loaded."""

    loaded: Loaded | None = None
    shadow: ShadowEvaluator | None = None


def settings_of(ctx: ServiceContext) -> CompressionSettings:
    s = ctx.settings
    if isinstance(s, CompressionSettings):
        return s
    return CompressionSettings.model_validate(s or {})


def _media_type(request: RawRequest) -> str:
    return request.header(b"content-type").split(";", 1)[0].strip().lower()


def _result(choice: Choice, version: str) -> dict:
    return {"codec": choice.option.codec, "level": choice.option.level, "predicted_seconds": choice.seconds,
            "model_version": version}


def build_app(ctx: ServiceContext) -> App:
    settings = settings_of(ctx)
    state = State()
    metrics = CompressionMetrics(ctx.registry)
    cal_path = settings.calibration_path or calibrate.default_path(ctx.data_dir)
    max_sample = settings.max_sample_bytes
    # JSON bodies carry base64 (4/3 of the bytes) plus a few numbers per item.
    single_limit = max_sample * 4 // 3 + 4096
    batch_limit = settings.max_batch * single_limit

    async def startup() -> None:
        loaded = await asyncio.to_thread(selector.load, settings.model_path, cal_path)
        if loaded.warning:
            ctx.logger.warning(loaded.warning)
        # The shadow's own selector (same model and calibration): its worker thread needs its own Extractor.
        shadow_selector = Selector(loaded.selector.model, loaded.selector.calibration)
        shadow = ShadowEvaluator.from_settings(settings, loaded.selector.calibration.pilot, metrics.shadow_evaluated,
                                               choose=lambda r: shadow_selector.choose([r])[0].index)
        metrics.export_accuracy(shadow.accuracy)
        state.loaded, state.shadow = loaded, shadow
        app.state.shadow = shadow
        ctx.logger.info("selector ready", extra={"event": "selector_ready", "model": loaded.selector.version,
                                                 "calibration": str(cal_path), "calibrated_now": loaded.calibrated_now})
        shadow.start()
        await settle_heap()  # the model, numpy and the web stack live as long as the process (~66k objects)

    async def shutdown() -> None:
        if state.shadow is not None:
            await asyncio.to_thread(state.shadow.stop)

    def model_check() -> HealthResult:
        if state.loaded is None:
            return HealthResult("down", "model not loaded")
        if state.loaded.warning:
            return HealthResult("degraded", state.loaded.warning)
        return HealthResult("ok", state.loaded.selector.version)

    app = create_app(ctx, title="DWCP compression selector", on_startup=[startup], on_shutdown=[shutdown],
                     description="Chooses the codec and level that minimise a payload's WAN transfer time.",
                     health_checks={"model": model_check})

    def loaded() -> Loaded:
        if state.loaded is None:
            raise ApiError(503, "unavailable", "model not loaded yet")
        return state.loaded

    def choose(requests: list[Request]) -> tuple[list[Choice], str]:
        sel = loaded().selector
        t0, c0 = time.perf_counter(), time.thread_time()
        choices = sel.choose(requests)
        metrics.chosen([c.index for c in choices], time.perf_counter() - t0, time.thread_time() - c0)
        for r, c in zip(requests, choices, strict=True):
            state.shadow.offer(r, c.index)
        return choices, sel.version

    async def predict(request: RawRequest) -> bytes:
        if _media_type(request) != JSON:
            raise ApiError(415, "unsupported_media_type", f"content-type must be {JSON} (raw bytes: "
                           "POST /v1/predict/raw)", "content-type")
        item = api.parse_object(api.decode_json(await request.body(single_limit, "sample")), max_sample)
        (choice,), version = choose([item])
        return _encode(_result(choice, version))

    async def predict_raw(request: RawRequest) -> bytes:
        if _media_type(request) != OCTETS:
            raise ApiError(415, "unsupported_media_type", f"content-type must be {OCTETS}", "content-type")
        item = api.parse_query(await request.body(max_sample, "sample"), request.query(), max_sample)
        (choice,), version = choose([item])
        return _encode(_result(choice, version))

    async def predict_batch(request: RawRequest) -> bytes:
        if _media_type(request) != JSON:
            raise ApiError(415, "unsupported_media_type", f"content-type must be {JSON}", "content-type")
        items = api.parse_batch(api.decode_json(await request.body(batch_limit, "sample")), max_sample,
                                settings.max_batch)
        choices, version = choose(items)
        return _encode({"results": [_result(c, version) for c in choices], "model_version": version})

    # The two hot endpoints skip FastAPI's per-request layers (App.fast_post); these are their docs.
    app.fast_post("/v1/predict", predict, tags=["selector"], openapi_extra=PREDICT_DOC,
                  responses={200: {"model": api.PredictResponse}}, summary="Choose the codec and level for one payload")
    app.fast_post("/v1/predict/raw", predict_raw, tags=["selector"], openapi_extra=RAW_DOC,
                  responses={200: {"model": api.PredictResponse}},
                  summary="Choose for one payload sent as raw bytes, the link in the query")
    app.fast_post("/v1/predict/batch", predict_batch, tags=["selector"], openapi_extra=BATCH_DOC,
                  responses={200: {"model": api.BatchResponse}}, summary="Choose for up to 256 payloads at once")

    @app.get("/v1/codecs", tags=["selector"], response_model=api.CodecsResponse, summary="Options the selector uses")
    async def codecs() -> dict:
        return {"codecs": [{"codec": o.codec, "level": o.level} for o in OPTIONS]}

    @app.get("/v1/model", tags=["selector"], summary="Loaded model and calibration")
    async def model_info() -> dict:
        done = loaded()
        sel = done.selector
        return {"model_version": sel.version, "model_path": str(done.model_path), "features": list(sel.model.features),
                "training": sel.model.training, "calibration": {
                    "path": str(done.calibration_path), "host": sel.calibration.host,
                    "created": sel.calibration.created, "calibrated_at_start": done.calibrated_now}}

    @app.get("/v1/shadow", tags=["selector"], summary="Online accuracy from shadow oracle evaluations")
    async def shadow_stats() -> dict:
        loaded()
        return state.shadow.stats()

    return app
