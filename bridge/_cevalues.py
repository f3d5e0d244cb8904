"""Value helpers of :mod:`bridge.events`: body data, header names and values, times, JSON.

Private: the rules are design §6's; everything here is pure and cached where inputs repeat
(header names, content types), so the per-message path does no parsing twice.
"""

from __future__ import annotations

import binascii
import codecs
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, NamedTuple

import orjson
import structlog

_log = structlog.get_logger("bridge.events")

RESERVED: Final = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "data",
        "database64",
    }
)
"""Attribute names (reduced to ``[a-z0-9]``) a header never overwrites (design §6)."""

_RABBIT_EXACT: Final = frozenset({"x-death", "x-delay", "x-received-from", "x-delivery-count"})
_RABBIT_PREFIXES: Final = ("x-first-death-", "x-last-death-")
_CE_PREFIXES: Final = ("cloudevents_", "cloudevents:", "ce-", "ce_")
_KEEP: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_RFC3339: Final = re.compile(
    r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)", re.ASCII
)
_JSON_OPTS: Final = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_TIME_OPTS: Final = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
_BYTES: Final = (bytes, bytearray, memoryview)
_UTF8_BOM: Final = codecs.BOM_UTF8
_DIGIT_RUN: Final = b"0" * 19
"""orjson reads integers up to 64 bits exactly; one of 19 digits or more may be beyond."""
_DIGITS_ONLY: Final = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
"""``bytes.translate`` table: digits -> ``0``, anything else -> space (10x faster than re)."""
_LONG_DIGITS_TEXT: Final = re.compile(r"[0-9]{19}", re.ASCII)
_SHALLOW: Final = 200
"""A document with fewer brackets than this is nested shallowly enough for orjson to write."""
_ENVELOPE_LEVELS: Final = 8
"""Levels an event adds around its data (event, ``{"value": ...}``), with a margin."""


class HeaderName(NamedTuple):
    """A header name classified: ``ext`` is the name reduced to ``[a-z0-9]``; ``attr`` the
    reduced attribute name after a CloudEvents binary-mode prefix, else None."""

    ext: str
    attr: str | None


class Media(NamedTuple):
    """A parsed content type: JSON (``application/json``, ``*/*+json``), structured CE
    (``application/cloudevents+json``), and the Python codec its charset names (None:
    no charset, or one Python does not know, design §6: then UTF-8 is tried)."""

    json: bool
    structured: bool
    charset: str | None


NO_DATA: Final[Any] = object()
"""What :func:`body_data` returns for an empty body: the event gets no ``data``."""
_NO_MEDIA: Final = Media(json=False, structured=False, charset=None)


@lru_cache(maxsize=4096)
def ext_name(name: str) -> str:
    """``name`` lowercased and reduced to ``[a-z0-9]`` (may be empty)."""
    return "".join(ch for ch in name.lower() if ch in _KEEP)


@lru_cache(maxsize=4096)
def header_name(name: str) -> HeaderName | None:
    """Classify a header name; None for RabbitMQ's own headers (design §6)."""
    low = name.lower()
    if low in _RABBIT_EXACT or low.startswith(_RABBIT_PREFIXES):
        return None
    for prefix in _CE_PREFIXES:
        if low.startswith(prefix):
            return HeaderName(ext_name(name), ext_name(low[len(prefix) :]))
    return HeaderName(ext_name(name), None)


def merge_extensions(ext: dict[str, Any], candidates: Iterable[tuple[str, str, Any]]) -> None:
    """Add ``(name, original name, value)`` candidates to ``ext`` (design §6).

    Empty and reserved names are dropped; names already in ``ext`` are kept; among candidates
    reducing to one name, the original name sorting first (code-point order) wins.
    """
    owners: dict[str, str] = {}
    for name, orig, value in candidates:
        if not name or name in RESERVED:
            continue
        owner = owners.get(name)
        if owner is None:
            if name in ext:
                continue
        elif orig < owner:
            _log.debug("extension_collision", extension=name, kept=orig, dropped=owner)
        else:
            _log.debug("extension_collision", extension=name, kept=owner, dropped=orig)
            continue
        owners[name] = orig
        ext[name] = value if type(value) is str else ext_value(value)


def ext_value(value: Any) -> Any:
    """An extension value (design §6): str/bool/int32 kept, bytes -> base64, Decimal -> its
    exact text, datetime -> RFC 3339 UTC, anything else -> compact JSON text."""
    kind = type(value)
    if kind is str or kind is bool:
        return value
    if kind is int:
        return value if _INT32_MIN <= value <= _INT32_MAX else str(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and _INT32_MIN <= value <= _INT32_MAX:
        return int(value)
    return _text(value)


def attr_text(value: Any) -> str:
    """A context attribute as text: str kept, bytes decoded as UTF-8, None -> ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, _BYTES):
        return bytes(value).decode("utf-8", errors="replace")
    return _text(value)


def _text(value: Any) -> str:
    """bytes -> base64, Decimal -> exact text, datetime -> RFC 3339, else compact JSON."""
    if isinstance(value, _BYTES):
        return binascii.b2a_base64(value, newline=False).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, int):  # beyond int32: JSON text of an int is its digits
        return str(int(value))
    return json_text(value)


def json_text(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON text of any value; never raises (falls back to ``str``)."""
    return _dumps(value, sort_keys=sort_keys).decode()


def canonical_json(value: Any) -> bytes:
    """Sorted-key compact JSON; bytes as base64, Decimal as text, datetime as RFC 3339 UTC."""
    return _dumps(value, sort_keys=True)


def _dumps(value: Any, *, sort_keys: bool) -> bytes:
    opts = _JSON_OPTS | orjson.OPT_SORT_KEYS if sort_keys else _JSON_OPTS
    try:
        return orjson.dumps(value, default=_default, option=opts)
    except orjson.JSONEncodeError:  # ints beyond 64 bits, deep nesting, cycles
        pass
    try:
        text = json.dumps(
            value, default=_default, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False
        )
    except (TypeError, ValueError, RecursionError):
        text = json.dumps(str(value), ensure_ascii=False)
    return text.encode()


def _default(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview | Decimal | datetime):
        return _text(obj)
    if isinstance(obj, date | time):
        return obj.isoformat()
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    return str(obj)


def rfc3339(dt: datetime) -> str:
    """RFC 3339 UTC with ``Z``; naive means UTC, whatever the process time zone. The fraction
    is the shortest exact one: none, milliseconds or microseconds."""
    tz = dt.tzinfo
    if tz is not None and tz is not UTC:
        dt = dt.astimezone(UTC)
    text = orjson.dumps(dt, option=_TIME_OPTS)[1:-1].decode()
    micro = dt.microsecond
    if micro and micro % 1000 == 0:
        return text[:-4] + "Z"
    return text


def parse_time(value: Any) -> str | None:
    """An incoming CE ``time`` as RFC 3339 UTC, or None when it is not RFC 3339 (or absent)."""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return None
    try:
        return rfc3339(datetime.fromisoformat(value.upper()))
    except (ValueError, OverflowError):  # a leap second, month 13, year 0 in UTC
        return None


def media_type(content_type: str | None) -> Media:
    """Parse a content type (case and parameters ignored, ``charset`` read); cached."""
    if content_type is None:
        return _NO_MEDIA
    return _media(content_type)


@lru_cache(maxsize=256)
def _media(content_type: str) -> Media:
    kind, *params = content_type.split(";")
    kind = kind.strip().lower()
    structured = kind == "application/cloudevents+json"
    is_json = kind == "application/json" or (kind.endswith("+json") and "/" in kind)
    return Media(json=is_json, structured=structured, charset=_charset(params))


def _charset(params: list[str]) -> str | None:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            try:
                name = codecs.lookup(value.strip().strip('"')).name
                b"\x00".decode(name, "ignore")  # not a text encoding (base64, rot13): LookupError
            except (LookupError, ValueError, TypeError):
                return None
            return name
    return None


def body_data(body: bytes, content_type: str | None) -> Any:
    """The ``data`` of a body (design §6): a JSON object, ``{"value"|"text"|"base64": ...}``.

    Args:
        body: the raw bytes; empty gives the sentinel "no data".
        content_type: the MIME type (case and parameters ignored) or None, then a body that
            parses as JSON is JSON.
    """
    if not body:
        return NO_DATA
    media = media_type(content_type or None)
    if media.json or not content_type:
        try:
            return wrap_json(loads(body, media.charset))
        except ValueError:  # orjson.JSONDecodeError, UnicodeDecodeError
            pass
    try:
        return {"text": body.decode(media.charset or "utf-8")}
    except ValueError:  # UnicodeError
        return {"base64": binascii.b2a_base64(body, newline=False).decode("ascii")}


def wrap_json(value: Any) -> dict[str, Any]:
    """A JSON object as is, any other JSON value as ``{"value": value}`` (design §6)."""
    return value if type(value) is dict else {"value": value}


def loads(body: bytes, charset: str | None) -> Any:
    """JSON of ``body`` in ``charset`` (None: UTF-8); raises ValueError when it is none.

    orjson parses (strictly: no NaN, no lone surrogates, at most 1024 levels), with three
    corrections so that what parses is also sent exactly:

    * a leading UTF-8 byte order mark is ignored (RFC 8259 §8.1 allows it; some producers
      write one);
    * integers beyond 64 bits stay exact: orjson would turn them into floats silently, so a
      document with a run of 19 digits is read again by the standard library;
    * a document nested too deeply for :func:`encode_json` (orjson writes 255 levels, the
      standard library what the recursion limit allows) counts as no JSON (ValueError), so it
      is sent as text instead of failing to encode after it was parsed.
    """
    if charset is None or charset == "utf-8":
        if body.startswith(_UTF8_BOM):
            body = body[len(_UTF8_BOM) :]
        value = orjson.loads(body)
        if _DIGIT_RUN in body.translate(_DIGITS_ONLY):
            value = _exact(body.decode("utf-8"), value)
    else:
        text = body.decode(charset)
        value = orjson.loads(text)
        if _LONG_DIGITS_TEXT.search(text) is not None:
            value = _exact(text, value)
    if (body.count(b"[") + body.count(b"{") > _SHALLOW) and not _encodable(value):
        raise ValueError("JSON nested too deeply to encode")
    return value


def _exact(text: str, parsed: Any) -> Any:
    """``text`` (valid JSON: orjson parsed it) read by the standard library, whose integers
    are exact; ``parsed`` when it cannot (recursion, more than 4300 digits)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return parsed


def _encodable(value: Any) -> bool:
    """:func:`encode_json` can write ``value`` inside an event, with room to spare."""
    nested: Any = value
    for _ in range(_ENVELOPE_LEVELS):
        nested = [nested]
    try:
        encode_json(nested)
    except ValueError:
        return False
    return True


def encode_json(value: Any) -> bytes:
    """Compact JSON (UTF-8) of JSON-typed ``value``: orjson, or the standard library for what
    orjson refuses but JSON can hold (integers beyond 64 bits, more than 255 levels).

    Raises:
        ValueError: JSON cannot hold ``value`` (a lone surrogate, NaN, a non-JSON type, nesting
            beyond the recursion limit).
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        pass
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
    except (TypeError, RecursionError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
