"""Broker message -> CloudEvent: a pure, deterministic mapping (shared/design.md §6).

STUB: to be implemented. The public surface below is the contract other modules use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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

    Args:
        msg: the broker message.
        source: the registered EG source name (always the event's ``source``).
        default_type: ``forwarding.event_type``, used when the message carries no type.

    Returns:
        A JSON-serialisable dict with ``specversion``, ``id``, ``source``, ``type``,
        ``datacontenttype`` and, where present, ``subject``, ``time``, ``data`` and extensions.

    Raises:
        ConversionError: the message cannot be represented (e.g. a structured CloudEvent whose
            body is not a JSON object).
    """
    raise NotImplementedError


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes of one event; its length is the event's size (design §6)."""
    raise NotImplementedError
