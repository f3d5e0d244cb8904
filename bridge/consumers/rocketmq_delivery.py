"""One RocketMQ message on its way through the pipeline (issue 6; shared/rocketmq.md §1;
shared/design.md §6, §7).

:func:`copy_message` copies a ``rocketmq.client.ReceivedMessage`` (a C pointer valid only
during the native callback) into an :class:`~bridge.events.InboundMessage`;
:class:`RocketDelivery` holds the consume thread's answer until the pipeline settles it.

The client (client-cpp 2.1.0) hands one pull batch (up to 32 messages of one queue) to one
consume thread and calls Python once per message; after a ``RECONSUME_LATER`` it skips the
rest of the batch and sends the whole batch back to ``%RETRY%<group>``, messages already
acknowledged included (duplicates with the same id; ``DefaultMQPushConsumerImpl.cpp``,
``ConsumeMessageConcurrentlyService.cpp``; seen with the test broker). A message EG rejects
for good must therefore not answer ``RECONSUME_LATER``, or it drags its batch mates through
every retry into ``%DLQ%<group>``: :meth:`RocketDelivery.dead_letter` records the rejection,
and the consume thread publishes a copy to the dead-letter topic itself
(:func:`dead_letter_properties`) and answers ``CONSUME_SUCCESS`` only once that send
succeeded (:meth:`bridge.consumers.rocketmq.RocketConsumer._publish_dead_letter`).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from bridge.events import InboundMessage

CONSUME_SUCCESS, RECONSUME_LATER = 0, 1
"""``rocketmq.client.ConsumeStatus`` values."""
REASON_PROPERTY, ERROR_CODE_PROPERTY = "x-eg-bridge-reason", "x-eg-bridge-error-code"
ORIGIN_MESSAGE_ID = "ORIGIN_MESSAGE_ID"
"""The id the broker's own retry and DLQ copies carry; :func:`copy_message` reads it back."""


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


class RocketDelivery:
    """One RocketMQ message held by its consume thread until settled (exactly once).

    Attributes:
        message: the copied message.
        reconsume_times: how often the broker redelivered it (0 on the first delivery).
        status: the consume status the thread returns (``RECONSUME_LATER`` until acked; a
            dead-lettered message keeps it unless the thread's dead-letter send succeeds).
        rejection: ``(reason, error_code)`` once dead-lettered, else None.
    """

    __slots__ = ("_done", "message", "reconsume_times", "rejection", "status")

    def __init__(self, message: InboundMessage, reconsume_times: int) -> None:
        self.message = message
        self.reconsume_times = reconsume_times
        self.status = RECONSUME_LATER
        self.rejection: tuple[str, str] | None = None
        self._done = threading.Event()

    @property
    def redelivered(self) -> bool:
        """The broker delivered it before (reconsume times > 0)."""
        return self.reconsume_times > 0

    @property
    def stale(self) -> bool:
        """Never: the consume thread waits for this message whatever the connection does."""
        return False

    def _settle(self, status: int, rejection: tuple[str, str] | None = None) -> None:
        if not self._done.is_set():
            self.status = status
            self.rejection = rejection
            self._done.set()

    def ack(self) -> None:
        """EG accepted the event: the thread returns ``CONSUME_SUCCESS``."""
        self._settle(CONSUME_SUCCESS)

    def requeue(self) -> None:
        """The thread returns ``RECONSUME_LATER``: redelivered later from ``%RETRY%``."""
        self._settle(RECONSUME_LATER)

    def dead_letter(self, reason: str, error_code: str) -> None:
        """Record the rejection and wake the thread, which publishes a copy to the dead-letter
        topic and then returns ``CONSUME_SUCCESS``; if that send fails, ``RECONSUME_LATER``
        (back through ``%RETRY%``, to ``%DLQ%<group>`` after the broker's retry limit)."""
        self._settle(RECONSUME_LATER, (reason, error_code))

    def wait(self, timeout_s: float) -> bool:
        """Block the calling (native) thread until settled; False after ``timeout_s``."""
        return self._done.wait(timeout_s)


def copy_message(msg: Any, properties: list[str]) -> tuple[InboundMessage, int]:
    """Copy a ``ReceivedMessage`` (valid only during the callback) into an InboundMessage.

    The id is ``ORIGIN_MESSAGE_ID`` when set (a retry of a message without ``UNIQ_KEY``), else
    the client's id (``UNIQ_KEY``, else the offset id), so it is stable across redeliveries
    (design §6). Bodies end at the first NUL byte: the native client cannot report their
    length (rocketmq.md §1).

    Returns:
        (message, reconsume_times).
    """
    origin = _text(msg.get_property(ORIGIN_MESSAGE_ID))
    headers = {}
    for name in properties:
        value = _text(msg.get_property(name))  # "" for a missing property
        if value:
            headers[name] = value
    born_ms = int(msg.born_timestamp)
    message = InboundMessage(
        body=msg.body or b"",
        received_at=datetime.now(UTC),
        headers=headers,
        message_id=origin or msg.id,
        subject=_text(msg.tags) or None,
        timestamp=datetime.fromtimestamp(born_ms / 1000, UTC) if born_ms > 0 else None,
        keys=_text(msg.keys) or None,
    )
    return message, int(msg.reconsume_times)


def dead_letter_properties(message: InboundMessage, reason: str,
                           error_code: str) -> dict[str, str]:
    """The properties of a message's dead-letter copy: the user properties the bridge copied
    (``connection.properties``), ``x-eg-bridge-reason``, ``x-eg-bridge-error-code`` (only when
    EG gave one: RocketMQ decoders drop empty values) and ``ORIGIN_MESSAGE_ID`` (the message id,
    the event id). Tags and keys travel as the message's own tags and keys."""
    props = {str(k): _text(v) if isinstance(v, bytes | str) else str(v)
             for k, v in message.headers.items()}
    props[REASON_PROPERTY] = reason
    if error_code:
        props[ERROR_CODE_PROPERTY] = error_code
    if message.message_id:
        props[ORIGIN_MESSAGE_ID] = message.message_id
    return props
