"""JSON encoding for the emulator's answers and records."""

from __future__ import annotations

import json

import orjson


def dumps(data: object) -> bytes:
    """Compact JSON bytes; documents nested deeper than orjson encodes (about 254 levels) go
    through the standard library, so a deep but valid event is never a 500."""
    try:
        return orjson.dumps(data)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
