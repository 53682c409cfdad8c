"""Request parsing and validation for the predict endpoints, without pydantic on the hot path.

Bodies are decoded with msgspec (several times faster than pydantic for this shape) and each field is
checked by hand so an error names exactly the field at fault (`items.3.bandwidth_mbps`). The pydantic
models at the bottom document the API in OpenAPI only.
"""

from __future__ import annotations

import math

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from dwcp.compression.costmodel import DEFAULT_CHUNK_BYTES, Link
from dwcp.compression.selector import Request
from dwcp.runtime.errors import ApiError
from dwcp.runtime.errors import decode_json as decode_json  # the one JSON decoder, re-exported for service.py
from dwcp.runtime.patterns import BASE64_PATTERN, max_base64

FIELDS = ("sample", "size_bytes", "bandwidth_mbps", "rtt_ms", "loss_rate", "chunk_bytes")
INTEGERS = ("size_bytes", "chunk_bytes")
REQUIRED = ("size_bytes", "bandwidth_mbps", "rtt_ms")
# Physical bounds (the schema states them too): past them a prediction is meaningless or not finite.
MAX_SIZE_BYTES = 1 << 50  # 1 PiB
MIN_BANDWIDTH_MBPS, MAX_BANDWIDTH_MBPS = 0.001, 1e7  # 1 kbit/s .. 10 Tbit/s
MAX_RTT_MS = 600_000.0  # 10 minutes
MAX_SAMPLE_BYTES = 65536  # the settings' default max_sample_bytes, as documented in the schema


def _invalid(field: str, message: str, status: int = 422) -> ApiError:
    return ApiError(status, "invalid_input" if status == 422 else "payload_too_large", f"{field}: {message}", field)


def _number(raw: object, field: str, *, minimum: float, strict_min: bool = False, maximum: float | None = None,
            integer: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _invalid(field, "must be an integer" if integer else "must be a number")
    if integer and not (isinstance(raw, int) or raw.is_integer()):  # JSON Schema: 3.0 is an integer
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
    size = int(_number(fields["size_bytes"], prefix + "size_bytes", minimum=1, maximum=MAX_SIZE_BYTES,
                       integer=True))
    bw = _number(fields["bandwidth_mbps"], prefix + "bandwidth_mbps", minimum=MIN_BANDWIDTH_MBPS,
                 maximum=MAX_BANDWIDTH_MBPS)
    rtt = _number(fields["rtt_ms"], prefix + "rtt_ms", minimum=0.0, maximum=MAX_RTT_MS)
    loss = _number(fields.get("loss_rate", 0.0), prefix + "loss_rate", minimum=0.0, maximum=1.0)
    chunk = int(_number(fields.get("chunk_bytes", DEFAULT_CHUNK_BYTES), prefix + "chunk_bytes", minimum=1,
                        maximum=MAX_SIZE_BYTES, integer=True))
    if len(sample) > max_sample:
        raise _invalid(prefix + "sample", f"{len(sample)} bytes exceeds the {max_sample}-byte limit", 413)
    if not sample:
        raise _invalid(prefix + "sample", "must not be empty")
    # A sample is part of the payload, and a chunk at most all of it: the larger sample says the payload is at
    # least that big, and a chunk larger than the payload is the payload (no cross-field refusals).
    size = max(size, len(sample))
    return Request(sample, size, Link(float(bw), float(rtt), float(loss)), min(chunk, size))


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
    # msgspec's base64 decoder accepts exactly the schema's BASE64_PATTERN (padded groups of four, no
    # whitespace; "" decodes to b""), in ~3 us for a 4 KiB sample where binascii's strict mode took ~13 us
    # and also let a "=" follow a whole group through ("QUJD=").
    try:
        return msgspec.convert(raw, bytes)
    except msgspec.ValidationError:
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
    for key in obj:
        if key != "items":
            raise _invalid(str(key), "unknown field")
    raw = obj["items"]
    if not isinstance(raw, list) or not raw:
        raise ApiError(422, "invalid_input", "items: must be a non-empty list", "items")
    if len(raw) > max_items:
        raise ApiError(422, "invalid_input", f"items: at most {max_items} per call", "items")
    return [parse_object(o, max_sample, f"items.{i}.") for i, o in enumerate(raw)]


def parse_query(sample: bytes, query: dict[str, str], max_sample: int) -> Request:
    """The octet-stream form: the body is the raw sample, the other fields are query parameters."""
    fields: dict[str, object] = {}
    for key, value in query.items():
        if key not in FIELDS[1:]:
            raise _invalid(key, "unknown query parameter")
        try:
            fields[key] = float(value)  # integers are checked as numbers with no fraction, as JSON ones are
        except ValueError:
            raise _invalid(key, "must be an integer" if key in INTEGERS else "must be a number") from None
    return check_item(sample, fields, max_sample)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample: str = Field(min_length=4, max_length=max_base64(MAX_SAMPLE_BYTES), pattern=BASE64_PATTERN,
                        description="base64 of a sample of the payload (all of it when it fits), 1 byte to 64 KiB")
    size_bytes: int = Field(ge=1, lt=MAX_SIZE_BYTES, description="size of the whole payload (a longer sample "
                            "counts as the whole payload)")
    bandwidth_mbps: float = Field(ge=MIN_BANDWIDTH_MBPS, lt=MAX_BANDWIDTH_MBPS, description="link bandwidth, Mbit/s")
    rtt_ms: float = Field(ge=0, lt=MAX_RTT_MS, description="round-trip time, ms")
    loss_rate: float = Field(0.0, ge=0, lt=1, description="packet loss probability")
    chunk_bytes: int = Field(DEFAULT_CHUNK_BYTES, ge=1, lt=MAX_SIZE_BYTES, description=(
        "the chunk the payload will be compressed and sent in (one larger than the payload is the payload): "
        "ratio and speeds are predicted for chunks of this size; default: the DWCP Manager's default chunk"))


def predict_schema() -> dict:
    """One prediction's JSON Schema, self-contained (no $ref), for the hand-written OpenAPI of the fast routes."""
    return PredictRequest.model_json_schema()


def batch_schema() -> dict:
    return {"type": "object", "required": ["items"], "additionalProperties": False, "properties": {
        "items": {"type": "array", "minItems": 1, "maxItems": 256, "items": predict_schema()}}}


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
