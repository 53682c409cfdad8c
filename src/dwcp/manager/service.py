"""HTTP API of a DWCP Manager site (`dwcp serve manager --instance I`); the work is in `site.ManagerSite`.

    PUT  /v1/objects/{key}        stream a body into the store -> {"key", "size", "sha256", "version"}
    GET  /v1/objects/{key}        stream the latest version back (single `Range: bytes=` supported)
    HEAD /v1/objects/{key}        size and sha256 in headers
    POST /v1/transfers            {"key", "to": "manager-<i>"} -> 202 {"id"}
    POST /v1/transfer-batches     {"keys": [...], "to"} -> 202 {"ids"}: one transfer per key, small ones
                                  sent together in one session (docs/manager.md)
    GET  /v1/transfers/{id}       state, bytes raw and on the wire, chunks, codecs, sha256, error
    GET  /v1/links                RTT, bandwidth and tier to each peer
    POST /v1/transactions         {"payload": base64, "cluster": tpbft|probft|bullshark|auto, "idempotency_key"}
    GET  /v1/transactions/{id}    pending or committed (with height), asked of the cluster
    POST /v1/allocations          forwarded to an allocator instance (failover); DELETE /v1/allocations/{id}
    /health, /metrics             from dwcp.runtime.app; /health reads only cached dependency state
"""

from __future__ import annotations

import asyncio
import binascii
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, Path, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model

from dwcp.allocator.service import AllocationRequest, AllocationResponse
from dwcp.compression.codecs import KEYS
from dwcp.manager.dependency import Unavailable
from dwcp.manager.routing import IdempotencyConflict, Rejected, UnknownId
from dwcp.manager.site import ManagerSite
from dwcp.manager.store import BadKey, NotFound, ObjectVersion, check_key
from dwcp.runtime.app import create_app, settle_heap
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.errors import ApiError
from dwcp.runtime.patterns import BASE64_PATTERN, max_base64

Handler = TypeVar("Handler", bound=Callable[..., Any])
WRITE_BLOCK = 1 << 20  # a PUT's body is written (and hashed) off the event loop in blocks of this size
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# `store.check_key` as a pattern: segments of [A-Za-z0-9._~-] joined by '/', none of them '.' or '..'.
_SEGMENT = r"(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.\.[A-Za-z0-9._~-]+)"
KEY_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"
ID_PATTERN = r"^[0-9a-f]{32}$"
OCTETS = "application/octet-stream"
_BINARY = {OCTETS: {"schema": {"type": "string", "format": "binary"}}}


class ObjectStored(BaseModel):
    key: str
    size: int
    sha256: str
    version: int


MAX_BATCH_KEYS = 4096


def _destination_fields(peers: list[str]) -> dict:
    return {
        "to": (str, Field(json_schema_extra={"enum": peers},
                          description="a peer site of this one in the inventory, e.g. manager-1")),
        "codec": (str | None, Field(None, json_schema_extra={"enum": [*KEYS, None]},
                                    description="every chunk in this codec (none, lz4, zstd-3, ...) instead of the "
                                    "selector's choice; for benchmarks and operators"))}


def transfer_request_model(peers: list[str], max_key: int) -> type[BaseModel]:
    """POST /v1/transfers' body: `to` is one of this site's peers and `codec` a known codec, in the schema."""
    return create_model(
        "TransferRequest", __config__=ConfigDict(extra="forbid"),
        key=(str, Field(min_length=1, max_length=max_key, pattern=KEY_PATTERN,
                        description="object key on this site; its latest version is sent")),
        **_destination_fields(peers))


def transfer_batch_model(peers: list[str], max_key: int) -> type[BaseModel]:
    """POST /v1/transfer-batches's body: `keys` instead of `key`, the rest as POST /v1/transfers."""
    key = Annotated[str, Field(min_length=1, max_length=max_key, pattern=KEY_PATTERN)]
    return create_model(
        "TransferBatchRequest", __config__=ConfigDict(extra="forbid"),
        keys=(list[key], Field(min_length=1, max_length=MAX_BATCH_KEYS,
                               description="object keys on this site; each key's latest version is sent")),
        **_destination_fields(peers))


class TransferAccepted(BaseModel):
    id: str


class TransfersAccepted(BaseModel):
    ids: list[str]  # in the order of `keys`


def transaction_request_model(max_tx_bytes: int) -> type[BaseModel]:
    """POST /v1/transactions' body, with the payload limits the handler enforces stated in the schema."""
    return create_model(
        "TransactionRequest", __config__=ConfigDict(extra="forbid"),
        # 4 characters per 3 bytes, whole groups only: never decodes to more than max_tx_bytes
        # (the length is checked by the handler, so a payload over it is a 413 like an over-long body)
        payload=(str, Field(min_length=4, pattern=BASE64_PATTERN, json_schema_extra={"maxLength": max_base64(
            max_tx_bytes)}, description="the transaction, base64")),
        cluster=(Literal["tpbft", "probft", "bullshark", "auto"], Field(description="auto: chosen by policy")),
        idempotency_key=(str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
                                    description="a retry with the same key commits at most once")),
        trust_sensitive=(StrictBool, Field(False, description="for auto: needs the trust-weighted cluster (T-PBFT)")))


class AllocationPlaced(AllocationResponse):
    allocator: str = Field(description="the allocator instance that placed it (releases go there)")


class TransactionAccepted(BaseModel):
    id: str
    cluster: str
    status: str
    replayed: bool = Field(description="true when the idempotency key was seen before: nothing was resubmitted")


def body_of(model: type[BaseModel]) -> Callable[[Handler], Handler]:
    """Annotate a handler's `body` with a model built at run time (a string annotation, as this module's
    `from __future__ import annotations` makes them, would be looked up among the module's globals)."""
    def annotate(handler: Handler) -> Handler:
        handler.__annotations__["body"] = model
        return handler
    return annotate


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range; None for no header; ApiError 416 when unsatisfiable."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise ApiError(416, "range_not_satisfiable", "range: only one 'bytes=start-end' range is supported",
                       "range")
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            raise ApiError(416, "range_not_satisfiable", "range: an empty suffix range selects nothing", "range")
        return max(0, size - n), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        raise ApiError(416, "range_not_satisfiable", f"range: {header!r} is outside the object's {size} bytes",
                       "range")
    return start, end


def build_app(ctx: ServiceContext, site: ManagerSite | None = None) -> FastAPI:
    site = site or ManagerSite(ctx)
    app = create_app(ctx, title=f"DWCP Manager {site.name}", description=__doc__ or "",
                     health_checks=site.health_checks(), on_startup=[site.start, settle_heap],
                     on_shutdown=[site.stop])
    app.state.site = site
    store, max_key = site.store, site.settings.max_key_bytes
    key_param = Path(min_length=1, max_length=max_key, pattern=KEY_PATTERN,
                     description="object name: segments of letters, digits and . _ ~ - joined by '/'")
    TransferRequest = transfer_request_model(sorted(site.peers), max_key)  # noqa: N806 - a model class
    TransferBatchRequest = transfer_batch_model(sorted(site.peers), max_key)  # noqa: N806 - a model class

    def valid_key(key: str) -> str:
        try:
            return check_key(key, max_key)
        except BadKey as exc:
            raise ApiError(422, "invalid_input", f"key: {exc}", "key") from None

    def latest(key: str, field: str = "key") -> ObjectVersion:
        try:
            return store.latest(valid_key(key))
        except NotFound:
            raise ApiError(404, "not_found", f"{field}: no object {key!r} on {site.name}", field) from None

    @app.put("/v1/objects/{key:path}", tags=["objects"], summary="Store a body as the key's next version",
             response_model=ObjectStored, openapi_extra={"requestBody": {"required": False, "content": _BINARY,
                                             "description": "the object's bytes; no body stores an empty object"}})
    async def put_object(request: Request, key: str = key_param) -> dict:
        key = valid_key(key)
        ingest = await asyncio.to_thread(store.begin_put)
        try:
            pending = bytearray()
            async for piece in request.stream():
                pending += piece
                if len(pending) >= WRITE_BLOCK:
                    block, pending = bytes(pending), bytearray()
                    await asyncio.to_thread(ingest.write, block)
            if pending:
                await asyncio.to_thread(ingest.write, bytes(pending))
            version = await asyncio.to_thread(ingest.commit, key)
        except BaseException:
            await asyncio.to_thread(ingest.abort)
            raise
        return version.as_dict()

    def object_headers(obj: ObjectVersion) -> dict[str, str]:
        return {"etag": f'"{obj.sha256}"', "x-object-sha256": obj.sha256, "x-object-version": str(obj.version),
                "accept-ranges": "bytes"}

    object_responses = {
        200: {"description": "the whole object", "content": _BINARY},
        206: {"description": "the bytes of a single `Range: bytes=start-end` (or `bytes=-suffix`)",
              "content": _BINARY},
        404: {"description": "no object under this key on this site"},
        416: {"description": "the Range is not one satisfiable byte range of the object",
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    }

    @app.get("/v1/objects/{key:path}", tags=["objects"], response_class=Response, responses=object_responses,
             summary="Stream the latest version (a single `Range: bytes=` range supported)")
    async def get_object(request: Request, key: str = key_param) -> Response:
        return serve_object(key, request)

    @app.head("/v1/objects/{key:path}", tags=["objects"], response_class=Response, responses=object_responses,
              summary="The latest version's size (content-length) and sha256 (etag, x-object-sha256)")
    async def head_object(request: Request, key: str = key_param) -> Response:
        return serve_object(key, request)

    def serve_object(key: str, request: Request) -> Response:
        obj = latest(key)
        headers = object_headers(obj)
        span = parse_range(request.headers.get("range", ""), obj.size)
        start, end = span or (0, obj.size)
        headers["content-length"] = str(end - start)
        status = 200
        if span is not None:
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{obj.size}"
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=OCTETS)
        return StreamingResponse(store.read_range(obj.sha256, start, end), status_code=status, headers=headers,
                                 media_type=OCTETS)

    @app.post("/v1/transfers", status_code=202, response_model=TransferAccepted, tags=["transfers"],
              summary="Send the key's latest version to a peer site")
    @body_of(TransferRequest)
    async def start_transfer(body) -> dict:
        obj = latest(body.key)
        check_destination(body.to, body.codec)
        transfer = await asyncio.to_thread(site.transfers.submit, obj, body.to, body.codec)
        return {"id": transfer.id}

    @app.post("/v1/transfer-batches", status_code=202, response_model=TransfersAccepted, tags=["transfers"],
              summary="Send several keys' latest versions to a peer site (small objects share one session)")
    @body_of(TransferBatchRequest)
    async def start_transfers(body) -> dict:
        objs = await asyncio.to_thread(lambda: [latest(k, "keys") for k in body.keys])
        check_destination(body.to, body.codec)
        transfers = await asyncio.to_thread(site.transfers.submit_many, objs, body.to, body.codec)
        return {"ids": [t.id for t in transfers]}

    def check_destination(to: str, codec: str | None) -> None:
        if to == site.name:
            raise ApiError(422, "invalid_input", f"to: {to} is this site", "to")
        if to not in site.peers:
            known = ", ".join(sorted(site.peers)) or "none"
            raise ApiError(422, "invalid_input", f"to: unknown peer {to!r}; peers: {known}", "to")
        if codec is not None and codec not in KEYS:
            raise ApiError(422, "invalid_input", f"codec: unknown codec {codec!r}; known: {', '.join(KEYS)}", "codec")

    @app.get("/v1/transfers/{transfer_id}", tags=["transfers"], summary="A transfer's progress")
    async def get_transfer(transfer_id: str = Path(pattern=ID_PATTERN, description="32 hex digits")) -> dict:
        t = await asyncio.to_thread(site.transfers.get, transfer_id)
        if t is None:
            raise ApiError(404, "not_found", f"transfer_id: no transfer {transfer_id} on {site.name}",
                           "transfer_id")
        return t.public()

    @app.get("/v1/links", tags=["links"], summary="RTT, bandwidth and tier to each peer")
    async def links() -> dict:
        return {"site": site.name, "links": [link.as_dict() for link in site.links.all()]}

    router, max_tx = site.router, site.settings.max_tx_bytes
    TransactionRequest = transaction_request_model(max_tx)  # noqa: N806 - a model class

    def unavailable(exc: Unavailable, field: str) -> ApiError:
        return ApiError(503, "unavailable", f"{field}: {exc}", field)

    @app.post("/v1/transactions", status_code=202, response_model=TransactionAccepted, tags=["routing"],
              responses={409: {"description": "the idempotency_key was used before with another payload"}},
              summary="Submit a transaction to a consensus cluster (explicit or by policy), at most once per key")
    @body_of(TransactionRequest)
    async def submit(body) -> dict:
        if len(body.payload) > max_base64(max_tx):
            raise ApiError(413, "payload_too_large", f"payload: more than {max_base64(max_tx)} base64 characters",
                           "payload")
        try:
            payload = binascii.a2b_base64(body.payload, strict_mode=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "invalid_input", "payload: not valid base64", "payload") from None
        if not payload or len(payload) > max_tx:
            raise ApiError(422 if not payload else 413, "invalid_input" if not payload else "payload_too_large",
                           f"payload: must be 1 to {max_tx} bytes", "payload")
        try:
            return await router.submit(payload, body.cluster, body.idempotency_key, body.trust_sensitive)
        except Unavailable as exc:
            raise unavailable(exc, "cluster") from None
        except IdempotencyConflict as exc:
            raise ApiError(409, "conflict", str(exc), "idempotency_key") from None
        except Rejected as exc:
            return JSONResponse(exc.body, status_code=exc.status)

    @app.get("/v1/transactions/{transaction_id}", tags=["routing"], summary="Follow a transaction to commit")
    async def transaction(transaction_id: str = Path(pattern=ID_PATTERN, description="32 hex digits")) -> dict:
        try:
            return await router.transaction(transaction_id)
        except UnknownId:
            raise ApiError(404, "not_found", f"transaction_id: {transaction_id} was not routed by {site.name}",
                           "transaction_id") from None
        except Unavailable as exc:
            raise unavailable(exc, "cluster") from None

    @app.post("/v1/allocations", tags=["routing"], summary="Request an allocation from the allocator (failover)",
              status_code=201, response_model=AllocationPlaced,
              responses={409: {"description": "the allocator has no room for this demand now (its answer)"}})
    async def allocate(body: AllocationRequest) -> JSONResponse:
        try:
            status, doc = await router.allocate(body.model_dump(mode="json", exclude_unset=True))
        except Unavailable as exc:
            raise unavailable(exc, "allocator") from None
        return JSONResponse(doc, status_code=status)

    @app.delete("/v1/allocations/{alloc_id}", tags=["routing"], summary="Release an allocation", status_code=204)
    async def release(alloc_id: str) -> Response:
        try:
            status, doc = await router.release(alloc_id)
        except UnknownId:
            raise ApiError(404, "not_found", f"alloc_id: {alloc_id!r} was not placed through {site.name}",
                           "alloc_id") from None
        except Unavailable as exc:
            raise unavailable(exc, "allocator") from None
        return Response(status_code=204) if status == 204 else JSONResponse(doc, status_code=status)

    return app
