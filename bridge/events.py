"""Broker message -> CloudEvent: a pure, deterministic mapping (shared/design.md §6).

:func:`to_cloudevent` turns a frozen :class:`InboundMessage` into the dict PutEvents sends;
:func:`encode_event` gives its compact JSON, whose length is the event's size (EG accepts at
most :data:`EVENT_MAX_BYTES` per event, shared/eg-api.md §5). Body data, header names and
values and times go through the (cached) helpers of :mod:`bridge._cevalues`.
"""

from __future__ import annotations

import hashlib
from base64 import b64decode
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from bridge._cevalues import (
    NO_DATA,
    attr_text,
    body_data,
    canonical_json,
    encode_json,
    ext_name,
    ext_value,
    header_name,
    loads,
    media_type,
    merge_extensions,
    parse_time,
    rfc3339,
    wrap_json,
)
from bridge.errors import ConversionError

__all__ = ["EVENT_MAX_BYTES", "InboundMessage", "encode_event", "event_size", "to_cloudevent"]

EVENT_MAX_BYTES: Final = 65536
"""EG's limit for one event's compact JSON encoding: 64 KiB (shared/eg-api.md §5)."""
SPECVERSION: Final = "1.0"
DATACONTENTTYPE: Final = "application/json"

_CORE: Final = frozenset(
    {"specversion", "id", "type", "source", "subject", "time", "datacontenttype", "dataschema"}
)
_TEXT_ATTRS: Final = frozenset({"specversion", "id", "type", "subject", "dataschema"})
_REQUIRED: Final = ("specversion", "id", "type")


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A broker message, copied out of the driver (frozen, no I/O).

    Attributes:
        body: the raw body bytes.
        headers: AMQP headers / RocketMQ user properties (values as the driver decoded them:
            str, bytes, bool, int, float, Decimal, datetime, list, dict, None).
        content_type: the AMQP ``content_type`` property, if any.
        message_id: AMQP ``message_id`` or the RocketMQ message id (``UNIQ_KEY``/msgId).
        type: the AMQP ``type`` property, if any.
        subject: AMQP routing key or RocketMQ tags ("" or None: no subject).
        timestamp: the broker timestamp (AMQP ``timestamp``, RocketMQ born timestamp), aware
            or naive-UTC.
        received_at: when the bridge received it (aware UTC).
        identity: what identifies an AMQP message without ``message_id``: queue, exchange,
            routing key and the non-delivery properties (design §6); hashed with the body and
            the non-RabbitMQ headers into a stable id.
        keys: RocketMQ ``KEYS`` (extension ``keys``), else None.
    """

    body: bytes
    received_at: datetime
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    message_id: str | None = None
    type: str | None = None
    subject: str | None = None
    timestamp: datetime | None = None
    identity: Mapping[str, Any] = field(default_factory=dict)
    keys: str | None = None


def to_cloudevent(msg: InboundMessage, *, source: str, default_type: str) -> dict[str, Any]:
    """Map ``msg`` to a CloudEvent dict ready for PutEvents (design §6).

    A structured CloudEvent (content type ``application/cloudevents+json``) or a binary one
    (``ce-``/``ce_``/``cloudEvents_``/``cloudEvents:`` headers with specversion, id and type)
    keeps its attributes, except ``source`` (moved to extension ``originalsource``) and
    ``datacontenttype`` (moved to extension ``contenttype``). Anything else is wrapped: id from
    ``message_id`` or else ``sha256(canonical_json([identity, headers]) + b"\\n" + body)``
    in hex (RabbitMQ's own headers and ``received_at`` left out, so redeliveries keep it);
    ``data`` from the body.

    Choices where design §6 is silent:

    * A binary CE missing specversion, id or type is no CE: its ``ce-*`` headers become
      ordinary extensions (``ce-type`` -> ``cetype``).
    * Extension attributes of a structured CE win over headers of the same name; within the
      headers (``ce-*`` attributes of a binary CE included) the original name that sorts first
      wins. ``contenttype``, ``originalsource`` and ``keys`` set by the mapping win over all.
    * An incoming ``time`` that is not RFC 3339 is dropped for the broker timestamp.
    * ``time`` has the shortest exact fraction: none, milliseconds or microseconds.
    * On a structured CE, ``ce-*`` headers are ordinary headers (``ce-id`` -> ``ceid``).
    * A structured CE's non-object ``data`` is ``{"text": s}`` for a string under a non-JSON
      ``datacontenttype``, else ``{"value": v}``; ``data_base64`` is decoded like a body.
    * An empty ``content_type`` counts as none.

    Args:
        msg: the broker message.
        source: the registered EG source name (always the event's ``source``).
        default_type: ``forwarding.event_type``, used when the message carries no type.

    Returns:
        A JSON-serialisable dict with ``specversion``, ``id``, ``source``, ``type``,
        ``datacontenttype``, ``time`` and, where present, ``subject``, ``dataschema``,
        extensions and ``data`` (always a JSON object).

    Raises:
        ConversionError: a structured CloudEvent that cannot be read: its body is not a JSON
            object; it lacks a string specversion, id or type; it has both ``data`` and
            ``data_base64`` or invalid base64. Such a message claims to be a CloudEvent, so it
            is dead-lettered (as Knative's adapter does) rather than forwarded as plain JSON.
    """
    candidates, ce = _split_headers(msg.headers)
    media = media_type(msg.content_type or None)
    ext: dict[str, Any] = {}
    if media.structured:
        attrs, data, content_type = _from_structured(msg.body, media.charset, ext)
    elif ce is not None:
        attrs, candidates = ce
        content_type = attr_text(attrs.pop("datacontenttype", None)) or msg.content_type or None
        data = body_data(msg.body, content_type)
    else:
        attrs, content_type = {}, msg.content_type or None
        data = body_data(msg.body, content_type)
    merge_extensions(ext, candidates)
    event = _envelope(msg, attrs, source, default_type)
    _set_mapped(ext, attrs, content_type, msg.keys)
    event.update(ext)
    if data is not NO_DATA:
        event["data"] = data
    return event


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes of one event; its length is the event's size (design §6).

    orjson writes it; what orjson refuses but JSON holds (integers beyond 64 bits, data
    nested more than 255 levels, both from bodies that parsed) goes through the standard
    library, so a body that parses as JSON is never dead-lettered for its encoding.

    Args:
        event: a dict from :func:`to_cloudevent` (any JSON-able mapping works).

    Raises:
        ConversionError: the event holds something JSON cannot carry (e.g. a header string
            with a lone surrogate); a permanent failure like any unconvertible message.
    """
    try:
        return encode_json(event if type(event) is dict else dict(event))
    except ValueError as exc:
        raise ConversionError(f"event is not JSON-serialisable: {exc}") from None


def event_size(event: Mapping[str, Any]) -> int:
    """Bytes of ``event``'s compact JSON; over :data:`EVENT_MAX_BYTES` EG rejects it (§6)."""
    return len(encode_event(event))


_Candidates = list[tuple[str, str, Any]]


def _split_headers(
    headers: Mapping[str, Any],
) -> tuple[_Candidates, tuple[dict[str, Any], _Candidates] | None]:
    """Extension candidates ``(name, original name, value)`` of the headers (RabbitMQ's own
    skipped) and, for a binary CE, ``(its attributes, its extension candidates)``."""
    plain: _Candidates = []
    if not headers:
        return plain, None
    prefixed = False
    for key, value in headers.items():
        orig = key if type(key) is str else str(key)
        name = header_name(orig)
        if name is not None:
            plain.append((name.ext, orig, value))
            prefixed = prefixed or name.attr is not None
    return plain, (_binary_ce(plain) if prefixed else None)


def _binary_ce(plain: _Candidates) -> tuple[dict[str, Any], _Candidates] | None:
    """A binary CE's attributes and extension candidates, if it has specversion, id, type."""
    owners: dict[str, str] = {}
    attrs: dict[str, Any] = {}
    candidates: _Candidates = []
    for ext, orig, value in plain:
        name = header_name(orig)
        attr = name.attr if name is not None else None
        if attr not in _CORE:
            candidates.append((ext if attr is None else attr, orig, value))
        elif attr not in owners or orig < owners[attr]:
            owners[attr], attrs[attr] = orig, value
    if all(attr_text(attrs.get(k)) for k in _REQUIRED):
        return attrs, candidates
    return None


def _from_structured(
    body: bytes, charset: str | None, ext: dict[str, Any]
) -> tuple[dict[str, Any], Any, str | None]:
    """Attributes, data and data content type of a structured CE; its extensions -> ``ext``."""
    try:
        doc = loads(body, charset)
    except ValueError as exc:  # orjson.JSONDecodeError, UnicodeDecodeError
        raise ConversionError(f"structured CloudEvent body is not JSON: {exc}") from None
    if type(doc) is not dict:
        raise ConversionError("structured CloudEvent body is not a JSON object")
    for key in _REQUIRED:
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise ConversionError(f"structured CloudEvent lacks a string {key!r}")
    attrs = {k: v for k, v in doc.items() if k in _CORE and v is not None}
    content_type = attr_text(attrs.pop("datacontenttype", None)) or None
    extras = [(ext_name(k), k, v) for k, v in doc.items() if k not in _CORE and v is not None]
    merge_extensions(ext, extras)
    return attrs, _structured_data(doc, content_type), content_type


def _structured_data(doc: dict[str, Any], content_type: str | None) -> Any:
    data, data_b64 = doc.get("data"), doc.get("data_base64")
    if data is not None and data_b64 is not None:
        raise ConversionError("structured CloudEvent has both data and data_base64")
    if data_b64 is not None:
        try:
            raw = b64decode(data_b64, validate=True)
        except (TypeError, ValueError):  # binascii.Error is a ValueError
            raise ConversionError("structured CloudEvent has invalid data_base64") from None
        return body_data(raw, content_type)
    if data is None:
        return NO_DATA
    if type(data) is str and content_type is not None and not media_type(content_type).json:
        return {"text": data}
    return wrap_json(data)


def _envelope(
    msg: InboundMessage, attrs: dict[str, Any], source: str, default_type: str
) -> dict[str, Any]:
    """The context attributes of design §6, incoming CE attributes first."""
    text = {k: attr_text(v) for k, v in attrs.items() if k in _TEXT_ATTRS} if attrs else attrs
    event: dict[str, Any] = {
        "specversion": text.get("specversion") or SPECVERSION,
        "id": text.get("id") or msg.message_id or _hashed_id(msg),
        "source": source,
        "type": text.get("type") or msg.type or default_type,
        "datacontenttype": DATACONTENTTYPE,
    }
    subject = text.get("subject") or msg.subject
    if subject:
        event["subject"] = subject
    incoming = parse_time(attrs["time"]) if "time" in attrs else None
    event["time"] = incoming or rfc3339(msg.timestamp or msg.received_at)
    schema = text.get("dataschema")
    if schema:
        event["dataschema"] = schema
    return event


def _set_mapped(
    ext: dict[str, Any], attrs: dict[str, Any], content_type: str | None, keys: str | None
) -> None:
    """Extensions the mapping itself sets; they win over headers of the same name."""
    original = attrs.get("source")
    if original is not None:
        ext["originalsource"] = attr_text(original)
    if content_type:
        ext["contenttype"] = content_type
    if keys:
        ext["keys"] = ext_value(keys)


def _hashed_id(msg: InboundMessage) -> str:
    """sha256 hex of ``canonical_json([identity, headers]) + b"\\n" + body`` (design §6).

    RabbitMQ's own headers are left out, so a redelivery (``x-death``, ``x-delivery-count``)
    keeps its id; ``received_at`` is not hashed either.
    """
    headers = {k: v for k, v in msg.headers.items() if header_name(str(k)) is not None}
    digest = hashlib.sha256(canonical_json([msg.identity, headers]))
    digest.update(b"\n")
    digest.update(msg.body)
    return digest.hexdigest()
