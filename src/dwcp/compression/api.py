"""Request parsing and validation for the predict endpoints, without pydantic on the hot path.

Bodies are decoded with msgspec (several times faster than pydantic for this shape) and each field is
checked by hand so an error names exactly the field at fault (`items.3.bandwidth_mbps`). The pydantic
models at the bottom document the API in OpenAPI only.
"""

from __future__ import annotations

import binascii
import math

from pydantic import BaseModel, Field

from dwcp.compression.costmodel import DEFAULT_CHUNK_BYTES, Link
from dwcp.compression.selector import Request
from dwcp.runtime.errors import ApiError
from dwcp.runtime.errors import decode_json as decode_json  # the one JSON decoder, re-exported for service.py

FIELDS = ("sample", "size_bytes", "bandwidth_mbps", "rtt_ms", "loss_rate", "chunk_bytes")
INTEGERS = ("size_bytes", "chunk_bytes")


def _invalid(field: str, message: str, status: int = 422) -> ApiError:
    return ApiError(status, "invalid_input" if status == 422 else "payload_too_large", f"{field}: {message}", field)


def _number(raw: object, field: str, *, minimum: float, strict_min: bool = False, maximum: float | None = None,
            integer: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _invalid(field, "must be an integer" if integer else "must be a number")
    if integer and not isinstance(raw, int):
        raise _invalid(field, "must be an integer")
    if not math.isfinite(raw):
        raise _invalid(field, "must be finite")
    if raw < minimum or (strict_min and raw == minimum):
        raise _invalid(field, f"must be {'>' if strict_min else '>='} {minimum:g}")
    if maximum is not None and raw >= maximum:
        raise _invalid(field, f"must be < {maximum:g}")
    return raw


def check_item(sample: bytes, fields: dict, max_sample: int, prefix: str = "") -> Request:
    """Validate the numeric fields of one item whose sample is already decoded."""
    for name in ("size_bytes", "bandwidth_mbps", "rtt_ms"):
        if name not in fields:
            _missing(prefix + name)
    size = int(_number(fields["size_bytes"], prefix + "size_bytes", minimum=1, integer=True))
    bw = _number(fields["bandwidth_mbps"], prefix + "bandwidth_mbps", minimum=0.0, strict_min=True)
    rtt = _number(fields["rtt_ms"], prefix + "rtt_ms", minimum=0.0)
    loss = _number(fields.get("loss_rate", 0.0), prefix + "loss_rate", minimum=0.0, maximum=1.0)
    chunk = DEFAULT_CHUNK_BYTES
    if "chunk_bytes" in fields:
        chunk = int(_number(fields["chunk_bytes"], prefix + "chunk_bytes", minimum=1, integer=True))
        if chunk > size:
            raise _invalid(prefix + "chunk_bytes", f"larger than the payload (size_bytes = {size})")
    if len(sample) > max_sample:
        raise _invalid(prefix + "sample", f"{len(sample)} bytes exceeds the {max_sample}-byte limit", 413)
    if not sample:
        raise _invalid(prefix + "sample", "must not be empty")
    if len(sample) > size:
        raise _invalid(prefix + "size_bytes", f"smaller than the sample ({len(sample)} bytes)")
    return Request(sample, size, Link(float(bw), float(rtt), float(loss)), chunk)


def _missing(field: str):
    raise _invalid(field, "field required")


def decode_sample(raw: object, field: str, max_sample: int) -> bytes:
    if raw is None:
        _missing(field)
    if not isinstance(raw, str):
        raise _invalid(field, "must be a base64 string")
    # Refuse before decoding: base64 of max_sample bytes is at most 4 * ceil(n / 3) characters.
    if len(raw) > 4 * (max_sample + 2) // 3 + 4:
        raise _invalid(field, f"exceeds the {max_sample}-byte limit", 413)
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError):
        raise _invalid(field, "is not valid base64") from None


def parse_object(obj: object, max_sample: int, prefix: str = "") -> Request:
    if not isinstance(obj, dict):
        raise _invalid(prefix.rstrip(".") or "body", "must be a JSON object")
    for key in obj:
        if key not in FIELDS:
            raise _invalid(prefix + str(key), "unknown field")
    return check_item(decode_sample(obj.get("sample"), prefix + "sample", max_sample), obj, max_sample, prefix)


def parse_batch(obj: object, max_sample: int, max_items: int) -> list[Request]:
    """The items of a `/v1/predict/batch` body, each validated; errors name the item (`items.3.rtt_ms`)."""
    if not isinstance(obj, dict) or "items" not in obj:
        raise ApiError(422, "invalid_input", "items: field required", "items")
    raw = obj["items"]
    if not isinstance(raw, list) or not raw:
        raise ApiError(422, "invalid_input", "items: must be a non-empty list", "items")
    if len(raw) > max_items:
        raise ApiError(413, "payload_too_large", f"items: at most {max_items} per call", "items")
    return [parse_object(o, max_sample, f"items.{i}.") for i, o in enumerate(raw)]


def parse_query(sample: bytes, query: dict[str, str], max_sample: int) -> Request:
    """The octet-stream form: the body is the raw sample, the other fields are query parameters."""
    fields: dict[str, object] = {}
    for key, value in query.items():
        if key not in FIELDS[1:]:
            raise _invalid(key, "unknown query parameter")
        try:
            fields[key] = int(value) if key in INTEGERS else float(value)
        except ValueError:
            raise _invalid(key, "must be an integer" if key in INTEGERS else "must be a number") from None
    return check_item(sample, fields, max_sample)


class PredictRequest(BaseModel):
    sample: str = Field(description="base64 of a sample of the payload (all of it when it fits), at most 64 KiB")
    size_bytes: int = Field(ge=1, description="size of the whole payload")
    bandwidth_mbps: float = Field(gt=0, description="link bandwidth, Mbit/s")
    rtt_ms: float = Field(ge=0, description="round-trip time, ms")
    loss_rate: float = Field(0.0, ge=0, lt=1, description="packet loss probability")
    chunk_bytes: int = Field(DEFAULT_CHUNK_BYTES, ge=1, description=(
        "the chunk the payload will be compressed and sent in (at most size_bytes): ratio and speeds are "
        "predicted for chunks of this size; default: the DWCP Manager's default chunk"))


class PredictResponse(BaseModel):
    codec: str = Field(description="none, lz4 (frame format), zstd or brotli")
    level: int | None
    predicted_seconds: float = Field(description="predicted compress+send+decompress time, cost model")
    model_version: str


class BatchRequest(BaseModel):
    items: list[PredictRequest] = Field(max_length=256)


class BatchResponse(BaseModel):
    results: list[PredictResponse]
    model_version: str


class CodecEntry(BaseModel):
    codec: str
    level: int | None


class CodecsResponse(BaseModel):
    codecs: list[CodecEntry]
