"""The seam between broker consumers and the pipeline (shared/design.md §2, §7).

A consumer hands each message to the pipeline as a :class:`Delivery`; the pipeline settles it
exactly once, from its own event's PutEvents result. Settling is synchronous and never raises:
the consumer performs the broker I/O, drops settlements for deliveries whose channel is gone
(the broker redelivers them) and logs what failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bridge.events import InboundMessage


class Delivery(Protocol):
    """One broker message awaiting its fate."""

    @property
    def message(self) -> InboundMessage:
        """The message, copied out of the driver."""
        ...

    @property
    def redelivered(self) -> bool:
        """The broker delivered it before (AMQP ``redelivered``, RocketMQ reconsume times > 0)."""
        ...

    @property
    def stale(self) -> bool:
        """The broker will deliver it again whatever happens here (RabbitMQ: its channel
        closed), so it must not be published: it would be sent twice."""
        ...

    def ack(self) -> None:
        """EG accepted the event: remove the message from the broker."""
        ...

    def requeue(self) -> None:
        """Give the message back for a later redelivery (shutdown, ``max_hold_s``)."""
        ...

    def dead_letter(self, reason: str, error_code: str) -> None:
        """The event can never be accepted: route the message to the dead-letter path.

        Args:
            reason: ``event_too_large``, ``eg_rejected`` or ``unconvertible`` (design §8).
            error_code: the EG per-event code, or "" when EG never saw the event.
        """
        ...


DeliveryHandler = Callable[[Delivery], None]


class Consumer(Protocol):
    """A broker consumer: RabbitMQ (aio-pika) or RocketMQ (rocketmq-client-python)."""

    async def start(self, handler: DeliveryHandler) -> None:
        """Connect and start delivering messages to ``handler``.

        Raises:
            ConsumerError: the first connection or the queue subscription failed.
        """
        ...

    async def stop_intake(self) -> None:
        """Stop receiving new messages (basic.cancel / RocketMQ stop flag); settlement of
        messages already delivered keeps working."""
        ...

    async def close(self) -> None:
        """Close the broker connection; unsettled messages return to the broker."""
        ...

    @property
    def last_error(self) -> Mapping[str, Any] | None:
        """The latest broker problem (``at``, ``kind``, ``error_code``, ``message``), or None."""
        ...

    @property
    def attached(self) -> bool:
        """A consumer is registered on an open channel / the consumer runs (design §8)."""
        ...

    async def watch(self, period_s: float = 1.0) -> None:
        """Log changes of :attr:`attached` until cancelled."""
        ...

    def describe(self) -> Mapping[str, Any]:
        """Status fields without secrets: ``type``, ``connected``, ``queue`` or ``topic``."""
        ...
