"""JSON Schema patterns more than one service's OpenAPI states, written once."""

from __future__ import annotations

# Base64 with its padding; at least one byte (4 characters).
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$"


def max_base64(max_bytes: int) -> int:
    """Longest base64 text accepted for `max_bytes`: whole 4-character groups that never decode to more."""
    return 4 * (max_bytes // 3)
