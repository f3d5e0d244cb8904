"""AMQP 0-9-1 deliveries as the bridge sees them: copy a delivered message out of the driver
(aiormq's ``DeliveredMessage``) into an :class:`~bridge.events.InboundMessage`, and back into
publish properties for a dead-letter copy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.events import InboundMessage

# Basic properties other than headers and message_id (AMQP 0-9-1 §4.2.6); their values take
# part in the hashed id of a message without message_id (design §6).
IDENTITY_PROPERTIES = (
    "content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
    "reply_to", "expiration", "timestamp", "message_type", "user_id", "app_id",
)


def inbound_message(delivered: Any, queue: str) -> InboundMessage:
    """Copy one delivery (aiormq ``DeliveredMessage``: ``delivery`` frame, ``header``
    properties, ``body``) of ``queue`` into a frozen :class:`InboundMessage`."""
    props = delivered.header.properties
    frame = delivered.delivery
    return InboundMessage(
        body=delivered.body,
        received_at=datetime.now(UTC),
        headers=props.headers or {},
        content_type=props.content_type,
        message_id=props.message_id,
        type=props.message_type,
        subject=frame.routing_key,
        timestamp=props.timestamp,
        identity={
            "queue": queue, "exchange": frame.exchange, "routing_key": frame.routing_key,
            "properties": {p: v for p in IDENTITY_PROPERTIES
                           if (v := getattr(props, p, None)) is not None},
        },
    )


def publish_properties(delivered: Any, extra_headers: dict[str, Any]) -> dict[str, Any]:
    """``aio_pika.Message`` keyword arguments that copy a delivery's properties, with
    ``extra_headers`` added to its headers (for the dead-letter copy, design §7)."""
    props = delivered.header.properties
    kwargs: dict[str, Any] = {
        "headers": {**(props.headers or {}), **extra_headers},
        "content_type": props.content_type, "content_encoding": props.content_encoding,
        "delivery_mode": props.delivery_mode, "priority": props.priority,
        "correlation_id": props.correlation_id, "reply_to": props.reply_to,
        "message_id": props.message_id, "timestamp": props.timestamp,
        "type": props.message_type, "user_id": props.user_id, "app_id": props.app_id,
    }
    if props.expiration and str(props.expiration).isdigit():
        kwargs["expiration"] = int(props.expiration) / 1000  # AMQP: ms as text; aio-pika: s
    return {k: v for k, v in kwargs.items() if v is not None}
