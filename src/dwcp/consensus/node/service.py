"""HTTP API of a consensus node, whichever registered protocol it runs: `dwcp serve <service> --instance I`.

    POST /v1/transactions          submit; body JSON {"payload": "<base64>"} or raw bytes with
                                   Content-Type application/octet-stream -> 202 {"id", "status"};
                                   with ?wait=true, 200 {"id", "status": "committed", "height"}
                                   once durable (202 pending if `timeout` seconds pass first)
    POST /v1/batches              many at once: body JSON {"payloads": ["<base64>", ...]}, 1..MAX_BATCH_TXS
                                   of them -> 202 {"accepted", "transactions": [{"id", "status",
                                   "height"}]}, status per transaction "pending" | "committed" | "duplicate" |
                                   "refused" (pool full); with ?wait=true, 200 once every accepted one is
                                   durable. One request and one forward to the primary for the lot;
                                   a bad batch is refused whole (413/415/422 naming payloads[i]).
    GET  /v1/transactions/{id}     {"id", "status": "pending"|"committed", "height"}; 404 unknown here,
                                   422 not a transaction id (32 hex digits)
    GET  /v1/blocks/{height}       {"height", "digest", "transactions": [...], "certificate": ...}
    GET  /v1/status                height, view, group, leader, peers connected, pending, ...
    /health, /metrics              from dwcp.runtime.app

Bad input gets the runtime's JSON error: 400 not JSON, 413 payload over `max_tx_bytes`, 415 a content
type other than JSON or raw bytes, 422 malformed (bad base64, empty payload), 409 a transaction already
pending or committed (same payload, same id), 503 while the node's pending pool is full. The consensus
transport starts with the app and stops with it, so a node that answers /health also runs consensus.
"""

from __future__ import annotations

import base64
import binascii

import msgspec
from fastapi import FastAPI, Path

from dwcp.consensus.core.messages import TX_ID_SIZE
from dwcp.consensus.node.assemble import build_components, build_node, node_settings
from dwcp.consensus.transport.driver import Driver, DuplicateTransaction, PoolFull
from dwcp.runtime.app import App, HealthResult, RawRequest, create_app, settle_heap
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.errors import ApiError, decode_json
from dwcp.runtime.patterns import BASE64_PATTERN, max_base64

RAW_TYPE = "application/octet-stream"
JSON_TYPE = "application/json"
TX_ID_PATTERN = f"^[0-9a-fA-F]{{{2 * TX_ID_SIZE}}}$"
MAX_HEIGHT = 2**63 - 1  # SQLite's INTEGER: a larger height cannot be stored, so it cannot be asked for
MAX_BATCH_TXS = 1000  # transactions per batched request (what one forwarded TxBatch carries at most)


def parse_submission(body: bytes, content_type: str, max_tx_bytes: int) -> bytes:
    """The transaction payload from a request body; ApiError (400/413/415/422) for anything else."""
    media = content_type.split(";")[0].strip().lower()
    if media == RAW_TYPE:
        return _checked(body, max_tx_bytes, "payload")
    if media != JSON_TYPE:
        raise ApiError(415, "unsupported_media_type", f"content-type must be {JSON_TYPE} or {RAW_TYPE}",
                       "content-type")
    doc = decode_json(body)
    if not isinstance(doc, dict) or set(doc) != {"payload"}:
        raise ApiError(422, "invalid_input", 'body must be {"payload": "<base64>"}', "payload")
    return _decoded(doc["payload"], max_tx_bytes, "payload")


def _decoded(text: object, max_tx_bytes: int, field: str) -> bytes:
    """A base64 payload from a JSON body, decoded and checked as `_checked` checks it."""
    if not isinstance(text, str):
        raise ApiError(422, "invalid_input", f"{field} must be a base64 string", field)
    try:
        payload = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_input", f"{field} is not valid base64", field) from None
    return _checked(payload, max_tx_bytes, field)


def _checked(payload: bytes, max_tx_bytes: int, field: str) -> bytes:
    if not payload:
        raise ApiError(422, "invalid_input", f"{field} is empty", field)
    if len(payload) > max_tx_bytes:
        raise ApiError(413, "payload_too_large", f"{field} of {len(payload)} bytes exceeds {max_tx_bytes}", field)
    return payload


def parse_batch(body: bytes, content_type: str, max_tx_bytes: int) -> list[bytes]:
    """The payloads of a batched submission, `{"payloads": ["<base64>", ...]}` (1..MAX_BATCH_TXS of them);
    ApiError (400/413/415/422) for anything else, naming the first bad one."""
    if content_type.split(";")[0].strip().lower() != JSON_TYPE:
        raise ApiError(415, "unsupported_media_type", f"content-type must be {JSON_TYPE}", "content-type")
    doc = decode_json(body)
    if not isinstance(doc, dict) or set(doc) != {"payloads"} or not isinstance(doc["payloads"], list):
        raise ApiError(422, "invalid_input", 'body must be {"payloads": ["<base64>", ...]}', "payloads")
    texts = doc["payloads"]
    if not texts:
        raise ApiError(422, "invalid_input", "payloads is empty: a batch holds 1 or more transactions", "payloads")
    if len(texts) > MAX_BATCH_TXS:
        raise ApiError(413, "payload_too_large", f"{len(texts)} transactions in one batch (at most {MAX_BATCH_TXS})",
                       "payloads")
    return [_decoded(text, max_tx_bytes, f"payloads[{i}]") for i, text in enumerate(texts)]


_encode = msgspec.json.Encoder().encode
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def submit_doc(max_tx_bytes: int) -> dict:
    """The OpenAPI of POST /v1/transactions: the limits `parse_submission` enforces, in the schema."""
    return {
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["payload"], "additionalProperties": False,
                "properties": {"payload": {
                    "type": "string", "pattern": BASE64_PATTERN, "minLength": 4,
                    # 4 characters per 3 bytes, whole groups only: never decodes to more than max_tx_bytes
                    "maxLength": max_base64(max_tx_bytes), "description": "base64 of the transaction"}}}},
            RAW_TYPE: {"schema": {"type": "string", "format": "binary", "minLength": 1, "maxLength": max_tx_bytes}},
        }},
        "parameters": [
            {"name": "wait", "in": "query", "schema": {"type": "boolean", "default": False},
             "description": "answer 200 once the transaction is durably committed (202 pending after `timeout`)"},
            {"name": "timeout", "in": "query", "schema": {"type": "number", "default": 5.0, "exclusiveMinimum": 0,
                                                          "maximum": 60}, "description": "seconds to wait"},
        ],
    }


def batch_doc(max_tx_bytes: int) -> dict:
    """The OpenAPI of POST /v1/batches: the limits `parse_batch` enforces, in the schema."""
    single = submit_doc(max_tx_bytes)
    payload = single["requestBody"]["content"][JSON_TYPE]["schema"]["properties"]["payload"]
    return {
        "requestBody": {"required": True, "content": {JSON_TYPE: {"schema": {
            "type": "object", "required": ["payloads"], "additionalProperties": False,
            "properties": {"payloads": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_TXS, "items": payload,
                                        "description": "the transactions, each as base64"}}}}}},
        "parameters": single["parameters"],
    }


def _flag(text: str, field: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ApiError(422, "invalid_input", f"{field}: must be true or false", field)


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ApiError(422, "invalid_input", "timeout: must be a number of seconds", "timeout") from None
    if not 0 < value <= 60:  # also refuses nan
        raise ApiError(422, "invalid_input", "timeout: must be > 0 and <= 60 seconds", "timeout")
    return value


def add_routes(app: App, driver: Driver, max_tx_bytes: int) -> None:
    # base64 grows 4/3; leave room for the JSON wrapper too.
    body_cap = max_tx_bytes * 4 // 3 + 1024

    async def submit(request: RawRequest) -> tuple[int, bytes]:
        # A fast route (runtime.app.App.fast_post): at 1,000 tx/s FastAPI's layers cost a node more CPU
        # than consensus on the transaction does.
        query = request.query()
        wait = _flag(query.get("wait", "false"), "wait")
        timeout = _timeout(query.get("timeout", "5"))
        body = await request.body(body_cap, "payload")
        payload = parse_submission(body, request.header(b"content-type"), max_tx_bytes)
        try:
            tx_id = driver.submit(payload)
        except DuplicateTransaction as dup:
            raise ApiError(409, "duplicate", f"transaction {dup.tx_id} is already {dup.status}", "payload") from None
        except PoolFull as full:
            raise ApiError(503, "unavailable", str(full)) from None
        if wait:
            height = await driver.wait_committed(tx_id, timeout)
            if height is not None:
                return 200, _encode({"id": tx_id, "status": "committed", "height": height})
        return 202, _encode({"id": tx_id, "status": "pending"})

    async def submit_batch(request: RawRequest) -> tuple[int, bytes]:
        query = request.query()
        wait = _flag(query.get("wait", "false"), "wait")
        timeout = _timeout(query.get("timeout", "5"))
        body = await request.body(MAX_BATCH_TXS * (body_cap + 4), "payloads")
        payloads = parse_batch(body, request.header(b"content-type"), max_tx_bytes)
        try:
            outcomes = driver.submit_many(payloads)
        except PoolFull as full:
            raise ApiError(503, "unavailable", str(full)) from None
        taken = [i for i, o in enumerate(outcomes) if o.status == "pending" and not o.detail]
        heights: list[int | None] = [None] * len(outcomes)
        if wait and taken:
            for i, height in zip(taken, await driver.wait_committed_many([outcomes[i].tx_id for i in taken], timeout),
                                 strict=True):
                heights[i] = height
        docs = []
        for o, height in zip(outcomes, heights, strict=True):
            status = "duplicate" if o.detail and o.status != "refused" else o.status
            if height is not None:
                status = "committed"
            docs.append({"id": o.tx_id, "status": status, "height": height})
        done = wait and all(heights[i] is not None for i in taken)
        return (200 if done else 202), _encode({"accepted": len(taken), "transactions": docs})

    app.fast_post("/v1/batches", submit_batch, tags=["consensus"], summary="Submit many transactions",
                  openapi_extra=batch_doc(max_tx_bytes),
                  responses={200: {"description": "every accepted transaction committed (with ?wait=true)"},
                             202: {"description": "accepted; per transaction: pending, duplicate or refused"}})

    app.fast_post("/v1/transactions", submit, tags=["consensus"], summary="Submit a transaction",
                  openapi_extra=submit_doc(max_tx_bytes),
                  responses={200: {"description": "committed (with ?wait=true)"},
                             202: {"description": "accepted, pending"},
                             409: {"description": "this transaction is already pending or committed"}})

    @app.get("/v1/transactions/{tx_id}", tags=["consensus"], summary="Pending or committed, with block height")
    async def transaction(tx_id: str = Path(pattern=TX_ID_PATTERN, description="32 hex digits")) -> dict:
        found = driver.tx_status(tx_id)
        if found is None:
            raise ApiError(404, "not_found", f"no transaction {tx_id} on this node", "tx_id")
        status, height = found
        return {"id": tx_id, "status": status, "height": height}

    @app.get("/v1/blocks/{height}", tags=["consensus"], summary="A committed block with its certificate")
    async def block(height: int = Path(ge=0, le=MAX_HEIGHT, description="block height")) -> dict:
        found = driver.block(height)
        if found is None:
            raise ApiError(404, "not_found", f"no committed block at height {height} on this node", "height")
        stored, blk, cert = found
        return {
            "height": stored.height,
            "digest": stored.digest.hex(),
            "epoch": blk.epoch,
            "view": blk.view,
            "proposer": blk.proposer,
            "transactions": [t.id.hex() for t in blk.txs],
            "certificate": cert.summary(),
            "committed_at": stored.committed_at,
        }

    @app.get("/v1/status", tags=["consensus"], summary="Height, view, group and peers of this node")
    async def status() -> dict:
        return driver.status()


def build_app(ctx: ServiceContext) -> FastAPI:
    """The node's FastAPI app; consensus starts in the app's startup hook and stops in its shutdown."""
    driver = build_node(ctx)
    components = build_components(ctx, driver)  # started after the driver

    def health() -> HealthResult:
        if driver.failed is not None:
            return HealthResult("down", driver.failed)
        connected, needed = len(driver.transport.connected), driver.peers_needed
        if connected < needed:
            protocol = driver.config.protocol
            return HealthResult("degraded", f"{connected} peers connected, {protocol} needs {needed} to make progress")
        return HealthResult("ok", f"{connected} peers connected, height {driver.height}")

    app = create_app(
        ctx,
        title=f"DWCP {ctx.service} consensus node {ctx.instance}",
        description=__doc__ or "",
        health_checks={"consensus": health},
        on_startup=[driver.start, *(c.start for c in components), settle_heap],
        # Run in reverse: the driver drains first, with the worker still up to store and spread batches.
        on_shutdown=[*(c.stop for c in components), driver.stop, driver.drain],
    )
    app.state.driver = driver
    add_routes(app, driver, node_settings(ctx).max_tx_bytes)
    return app
