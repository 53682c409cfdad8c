"""Parsing POST /v1/transactions bodies: what is accepted, and the status each bad body gets."""

from __future__ import annotations

import base64
import json

import pytest

from dwcp.consensus.node.service import RAW_TYPE, parse_submission
from dwcp.runtime.errors import ApiError


def _json(payload) -> bytes:
    return json.dumps({"payload": payload}).encode()


def test_json_base64_payload() -> None:
    assert parse_submission(_json(base64.b64encode(b"hi").decode()), "application/json", 10) == b"hi"


def test_raw_bytes_payload() -> None:
    assert parse_submission(b"\x00\x01raw", RAW_TYPE + "; charset=binary", 10) == b"\x00\x01raw"


@pytest.mark.parametrize(
    ("body", "ctype", "status", "field"),
    [
        (b"{not json", "application/json", 400, "body"),
        (b'{"payload": "\xff"}', "application/json", 400, "body"),
        (_json("aGk="), "text/plain", 415, "content-type"),
        (_json("aGk="), "", 415, "content-type"),
        (b"[1, 2]", "application/json", 422, "payload"),
        (json.dumps({"payload": "aGk=", "x": 1}).encode(), "application/json", 422, "payload"),
        (_json(123), "application/json", 422, "payload"),
        (_json("@@not base64@@"), "application/json", 422, "payload"),
        (_json(""), "application/json", 422, "payload"),
        (b"", RAW_TYPE, 422, "payload"),
        (_json(base64.b64encode(b"x" * 11).decode()), "application/json", 413, "payload"),
        (b"x" * 11, RAW_TYPE, 413, "payload"),
    ],
)
def test_bad_bodies(body: bytes, ctype: str, status: int, field: str | None) -> None:
    with pytest.raises(ApiError) as err:
        parse_submission(body, ctype, 10)
    assert err.value.status == status
    assert err.value.field == field
