"""JSON error bodies for every 4xx/5xx a DWCP service returns, and the one JSON body decoder.

Every error has one shape, `{"error": {"code": str, "message": str, "field": str | None}}`, so clients
and the load generator can tell bad input (which field) from a server fault without parsing prose.
Messages name the field and the rule broken; they never echo the input back (a 50 MB body must not come
back in its own 422).

`decode_json(body)` is how every service parses a JSON body (FastAPI routes through `app.JsonRoute`, fast
routes by calling it): malformed JSON, invalid UTF-8 and nesting too deep for the parser are all a 400
`bad_request` naming `body`, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("dwcp.runtime.errors")


class ApiError(StarletteHTTPException):
    """A request the service refuses, with the HTTP status and the offending field if there is one.

    An HTTP exception, so one raised while FastAPI reads a body (the capped reader, `decode_json`) keeps its
    status instead of becoming FastAPI's generic 400."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status)


def _field_of(loc: tuple | list) -> str | None:
    # FastAPI locations start with where the value came from ("body", "query"); the field is the rest.
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or (str(loc[0]) if loc else None)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    503: "unavailable",
}


def raised_response(exc: ApiError | StarletteHTTPException) -> JSONResponse:
    """The answer to an error a handler raises on purpose: an ApiError, or an HTTP exception (routing's too)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.field)
    response = error_response(exc.status_code, _STATUS_CODES.get(exc.status_code, "http_error"), str(exc.detail))
    response.headers.update(exc.headers or {})  # e.g. routing's 405 names the allowed methods in Allow
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Route every error path (ours, validation, routing, unexpected) to the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return raised_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":  # its loc is ("body", offset): the body, not a field "17"
            where = first.get("ctx", {}).get("error", "")
            return error_response(400, "bad_request", f"body: not valid JSON ({where})".replace(" ()", ""), "body")
        field = _field_of(first.get("loc", ()))
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return error_response(422, "invalid_input", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = raised_response(exc)
        if exc.status_code == 405:  # routing names one route's methods; a path may have several routes
            response.headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_response(request.method, request.url.path, exc)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of `app` serves at `path`."""
    methods = {m for route in app.router.routes if getattr(route, "path_regex", None) is not None
               and route.path_regex.match(path) for m in (getattr(route, "methods", None) or ())}
    return sorted(methods)


def unexpected_response(method: str, path: str, exc: Exception) -> JSONResponse:
    """Log a handler's bug with its traceback (call it while handling `exc`) and answer 500 without details."""
    log.exception("unhandled error on %s %s", method, path)
    return error_response(500, "internal_error", f"internal error: {type(exc).__name__}")


async def read_body_capped(request: Request, cap: int, field: str | None = None) -> bytes:
    """The request body, refused with 413 (naming `field`) before more than `cap` bytes are buffered: a
    declared Content-Length over the cap is refused unread, and a body that streams past it is cut off."""
    return await read_capped(request.headers.get("content-length"), request.stream(), cap, field)


async def read_capped(declared: str | None, chunks: AsyncIterator[bytes], cap: int, field: str | None) -> bytes:
    """`read_body_capped` on any source of body chunks, given the declared Content-Length (None if absent)."""
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise ApiError(413, "payload_too_large", f"request body of {declared} bytes exceeds {cap} bytes", field)
    chunks_read, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > cap:
            raise ApiError(413, "payload_too_large", f"request body exceeds {cap} bytes", field)
        chunks_read.append(chunk)
    return b"".join(chunks_read)


_json_decoder = msgspec.json.Decoder()


def decode_json(body: bytes, field: str = "body") -> object:
    """A JSON body as Python objects; ApiError 400 naming `field` for anything that is not valid JSON."""
    try:
        return _json_decoder.decode(body)
    except msgspec.DecodeError as exc:  # its messages give a position, never the input
        raise ApiError(400, "bad_request", f"{field}: not valid JSON ({exc})", field) from None
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_request", f"{field}: invalid UTF-8 at byte {exc.start}", field) from None
    except RecursionError:
        raise ApiError(400, "bad_request", f"{field}: JSON nested too deeply", field) from None
