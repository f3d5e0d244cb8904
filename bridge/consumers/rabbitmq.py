"""RabbitMQ consumer on aio-pika's robust connection (shared/design.md §3, §7).

Connects with the source's ``detail`` (``user_name``, ``password``, ``vhost_name``,
``queue_name``) and ``connection.address``; sets the prefetch (``basic.qos``, per consumer);
consumes with manual acks; declares the queue (durable) only when
``connection.declare_queue`` is true, otherwise checks that it exists. The robust connection
reconnects forever after the first success and restores the channel and its prefetch; the
consumer itself is kept by :meth:`RabbitConsumer.watch`, which consumes again whenever the
live channel lacks it (a reconnect, a server-side cancel after the queue was deleted).
Deliveries of a closed channel are never settled on the new one (the broker redelivers them).

Messages are consumed with aiormq's ``basic_consume`` on aio-pika's robust channel, skipping
aio-pika's per-message wrapper: the hot path is one driver task per message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import structlog

from bridge.consumers.acks import ChannelAcker, Fate
from bridge.consumers.amqp_message import inbound_message, publish_properties
from bridge.consumers.base import DeliveryHandler
from bridge.errors import ConsumerError
from bridge.events import InboundMessage
from bridge.settings import ConnectionSettings, SourceDetail, host_port

log = structlog.get_logger("bridge.consumers.rabbitmq")
CLOSE_STEP_TIMEOUT_S = 5.0
"""Longest wait for one shutdown step, so a broker outage never blocks SIGTERM."""
DEAD_LETTER_RETRY_S = 5.0
"""Pause before requeueing a message whose dead-letter publish failed."""
DLX_WARNING = "dead-lettered by the queue's DLX if it has one, otherwise dropped by the broker"

def masked_url(detail: SourceDetail, address: str) -> str:
    """``amqp://user:***@host:port/vhost``: the broker URL as logs and /status show it."""
    return f"amqp://{quote(detail.user_name or '', safe='')}:***@{address}/" + quote(
        detail.vhost_name, safe="")


class RabbitDelivery:
    """One AMQP delivery; settles through its channel's :class:`ChannelAcker`."""

    __slots__ = ("_acker", "_consumer", "_raw", "_tag", "message", "redelivered")

    def __init__(self, consumer: RabbitConsumer, raw: Any, acker: ChannelAcker,
                 message: InboundMessage) -> None:
        self._consumer = consumer
        self._raw = raw
        self._acker = acker
        self._tag: int = raw.delivery.delivery_tag
        self.message = message
        self.redelivered: bool = bool(raw.delivery.redelivered)

    @property
    def stale(self) -> bool:
        """Its channel closed: the broker redelivers it on the new channel (design §7)."""
        return self._acker.channel.is_closed  # type: ignore[no-any-return]

    def ack(self) -> None:
        """``basic.ack`` (coalesced with neighbours into ``multiple=true``)."""
        self._acker.settle(self._tag, Fate.ACK)

    def requeue(self) -> None:
        """``basic.nack requeue=true``."""
        self._acker.settle(self._tag, Fate.REQUEUE)

    def dead_letter(self, reason: str, error_code: str) -> None:
        """Publish to ``connection.dead_letter_exchange`` and ack after the confirm, or
        ``basic.nack requeue=false`` for the queue's own DLX (design §7)."""
        self._consumer.dead_letter(self._raw, self._acker, self._tag, reason, error_code)


class RabbitConsumer:
    """Consumes one queue and hands each message to the pipeline.

    Args:
        detail: the source detail (credentials, vhost, queue).
        connection: bridge-only settings (address, declare_queue, DLX, heartbeat).
        connection_name: shown in the RabbitMQ management UI.
        prefetch: basic.qos prefetch count (``Settings.prefetch()``).
    """

    def __init__(self, detail: SourceDetail, connection: ConnectionSettings,
                 connection_name: str = "eg-bridge", prefetch: int | None = None) -> None:
        self._detail = detail
        self._prefetch = prefetch or connection.prefetch or 200
        self._conn_settings = connection
        self._name = connection_name
        self._queue_name = detail.queue_name or ""
        self._url = masked_url(detail, connection.address)
        self._connection: Any = None
        self._channel: Any = None
        self._dlx_channel: Any = None
        self._consumer_tag: str | None = None
        self._consuming_on: Any = None
        self._stopping = False
        self._resubscribe = asyncio.Event()
        self._handler: DeliveryHandler | None = None
        self._ackers: dict[int, ChannelAcker] = {}
        self._dl_tasks: set[asyncio.Task[None]] = set()
        self._connected = False
        self.last_error: dict[str, Any] | None = None
        """The latest broker problem (``at``, ``kind``, ``error_code``, ``message``)."""

    async def start(self, handler: DeliveryHandler) -> None:
        """Connect, check or declare the queue, set the prefetch, start consuming.

        Raises:
            ConsumerError: the broker refused or is unreachable, or the queue is missing.
        """
        import aio_pika  # noqa: PLC0415 - drivers load lazily (design §2)

        self._handler = handler
        host, port = host_port(self._conn_settings.address)
        password = self._detail.password.get_secret_value() if self._detail.password else ""
        try:
            self._connection = await aio_pika.connect_robust(
                host=host, port=port, login=self._detail.user_name or "", password=password,
                virtualhost=self._detail.vhost_name, heartbeat=self._conn_settings.heartbeat_s,
                reconnect_interval=self._conn_settings.reconnect_interval_s,
                client_properties={"connection_name": self._name},
            )
        except Exception as exc:
            hint = ("the broker refused the login: check detail.user_name, detail.password and "
                    "detail.vhost_name" if "Authentication" in type(exc).__name__ else
                    "check connection.address, detail.vhost_name and that the broker runs")
            raise ConsumerError(
                f"cannot connect to RabbitMQ at {self._url}: {type(exc).__name__} ({hint})"
            ) from None
        self._connection.close_callbacks.add(self._on_close)
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        try:
            await self._subscribe()
        except ConsumerError:
            await self._connection.close()
            raise
        except Exception as exc:
            await self._connection.close()
            raise ConsumerError(
                f"cannot consume queue {self._queue_name!r} at {self._url}: {exc}") from None
        self._connected = True
        log.info("consumer attached", queue=self._queue_name, broker=self._url,
                 prefetch=self._prefetch, consumer_tag=self._consumer_tag)

    async def _subscribe(self) -> None:
        self._channel = await self._connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=self._prefetch)
        if self._conn_settings.dead_letter_exchange:
            self._dlx_channel = await self._connection.channel(publisher_confirms=True)
            try:  # a missing exchange would fail every dead letter: refuse to start instead
                await self._dlx_channel.get_exchange(self._conn_settings.dead_letter_exchange,
                                                     ensure=True)
            except Exception:
                raise ConsumerError(
                    f"connection.dead_letter_exchange "
                    f"{self._conn_settings.dead_letter_exchange!r} does not exist on the broker"
                ) from None
        await self._consume()

    async def _consume(self) -> None:
        """Check the queue (declare it durable when missing and ``declare_queue`` is set) on a
        probe channel, then ``basic.consume`` on the live channel. A failed declare closes only
        the probe channel."""
        underlay = await self._channel.get_underlay_channel()
        if not await self._declare(underlay.connection, passive=True):
            await self._declare(underlay.connection, passive=False)
        ok = await underlay.basic_consume(self._queue_name, self._on_delivered, no_ack=False)
        self._consumer_tag, self._consuming_on = ok.consumer_tag, underlay

    async def _declare(self, connection: Any, *, passive: bool) -> bool:
        """Declare the queue on a throw-away channel; False when a passive declare found no
        queue and ``declare_queue`` allows creating it. Raises what the broker answered."""
        from aiormq.exceptions import ChannelNotFoundEntity  # noqa: PLC0415

        probe = await connection.channel()
        try:
            await probe.queue_declare(self._queue_name, durable=True, passive=passive)
        except ChannelNotFoundEntity:
            if passive and self._conn_settings.declare_queue:
                return False
            raise
        finally:
            if not probe.is_closed:
                await probe.close()
        return True

    def _note(self, message: str) -> None:
        self.last_error = {"at": datetime.now(UTC).isoformat(), "kind": "broker",
                           "error_code": "", "message": message}

    def _on_close(self, _sender: Any, exc: BaseException | None = None) -> None:
        if self._connected:
            error = f"{type(exc).__name__}: {exc}" if exc else "closed"
            self._note(f"broker connection to {self._url} lost ({error})"[:500])
            log.warning("broker connection lost", broker=self._url, error=error[:300])
        self._connected = False
        self._ackers.clear()

    def _on_reconnect(self, _sender: Any) -> None:
        self._connected = True
        self._resubscribe.set()
        log.info("broker reconnected", broker=self._url, queue=self._queue_name)

    def _acker_for(self, raw: Any) -> ChannelAcker:
        channel = raw.channel
        acker = self._ackers.get(id(channel))
        if acker is None or acker.channel is not channel:
            self._ackers = {k: a for k, a in self._ackers.items() if a.open}
            acker = ChannelAcker(channel, hold_limit=max(1, self._prefetch // 2))
            self._ackers[id(channel)] = acker
        return acker

    async def _on_delivered(self, raw: Any) -> None:
        acker = self._acker_for(raw)
        acker.track(raw.delivery.delivery_tag)
        assert self._handler is not None
        self._handler(RabbitDelivery(self, raw, acker, inbound_message(raw, self._queue_name)))

    def dead_letter(self, raw: Any, acker: ChannelAcker, tag: int, reason: str,
                    error_code: str) -> None:
        """Route one message to the dead-letter path (see :meth:`RabbitDelivery.dead_letter`)."""
        if not self._conn_settings.dead_letter_exchange:
            log.warning(DLX_WARNING, queue=self._queue_name, reason=reason, error_code=error_code,
                        message_id=raw.header.properties.message_id,
                        routing_key=raw.delivery.routing_key)
            acker.settle(tag, Fate.REJECT)
            return
        task = asyncio.create_task(self._publish_dead_letter(raw, acker, tag, reason, error_code))
        self._dl_tasks.add(task)
        task.add_done_callback(self._dl_tasks.discard)

    async def _publish_dead_letter(self, raw: Any, acker: ChannelAcker, tag: int, reason: str,
                                   error_code: str) -> None:
        import aio_pika  # noqa: PLC0415

        exchange_name = self._conn_settings.dead_letter_exchange
        props = publish_properties(raw, {"x-eg-bridge-reason": reason,
                                         "x-eg-bridge-error-code": error_code})
        message_id = props.get("message_id")
        try:
            exchange = await self._dlx_channel.get_exchange(exchange_name, ensure=False)
            await exchange.publish(aio_pika.Message(raw.body, **props),
                                   routing_key=raw.delivery.routing_key or "")
        except Exception as exc:  # any failure: keep the message, retry later
            log.error("dead-letter publish failed, message requeued after a pause",
                      exchange=exchange_name, reason=reason, error=type(exc).__name__,
                      message_id=message_id, pause_s=DEAD_LETTER_RETRY_S)
            await asyncio.sleep(DEAD_LETTER_RETRY_S)  # a requeue loop, but never a hot one
            acker.settle(tag, Fate.REQUEUE)
            return
        log.warning("message published to the dead-letter exchange", exchange=exchange_name,
                    reason=reason, error_code=error_code, message_id=message_id)
        acker.settle(tag, Fate.ACK)

    async def stop_intake(self) -> None:
        """``basic.cancel``: the broker stops delivering; settlements keep working."""
        self._stopping = True
        if self._consumer_tag is not None:
            attached = self.attached
            if attached:
                with contextlib.suppress(Exception):  # a lost connection has no consumer
                    await asyncio.wait_for(
                        self._consuming_on.basic_cancel(self._consumer_tag),
                        CLOSE_STEP_TIMEOUT_S)
            log.info("consumer cancelled", queue=self._queue_name, connected=attached)
            self._consumer_tag = None

    async def close(self) -> None:
        """Write pending settlements, then close the connection."""
        if self._dl_tasks:
            await asyncio.wait(list(self._dl_tasks), timeout=CLOSE_STEP_TIMEOUT_S)
        for acker in list(self._ackers.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(acker.drain(), CLOSE_STEP_TIMEOUT_S)
        if self._connection is not None:
            self._connected = False
            with contextlib.suppress(Exception):  # unsettled messages go back to the broker
                await asyncio.wait_for(self._connection.close(), CLOSE_STEP_TIMEOUT_S)
            self._connection = None

    @property
    def attached(self) -> bool:
        """Our consumer tag is registered on the open channel of an open connection (design §8).

        Checked on the driver's current underlying channel, so a connection that came back
        without its consumer (a server-side cancel, a failed restore) counts as detached.
        """
        channel = self._live_channel()
        if not self._connected or self._consumer_tag is None or channel is None:
            return False
        return channel is self._consuming_on and self._consumer_tag in channel.consumers

    def _live_channel(self) -> Any:
        """aiormq's channel under aio-pika's robust channel right now, or None."""
        underlay = getattr(self._channel, "_channel", None)  # aio-pika's UnderlayChannel
        channel = getattr(underlay, "channel", None)
        return None if channel is None or channel.is_closed else channel

    async def watch(self, period_s: float = 0.5) -> None:
        """Keep the consumer on the live channel and log every change, until cancelled.

        After a reconnect or a server-side cancel (queue deleted) the consumer is missing: it
        is consumed again as soon as the queue can be found (or declared), every ``period_s``
        seconds until then.
        """
        was = self.attached
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resubscribe.wait(), period_s)
            self._resubscribe.clear()
            if not self.attached and self._connected and not self._stopping:
                await self._try_consume()
            now = self.attached
            if now != was:
                if now:
                    log.info("consumer attached again", queue=self._queue_name, broker=self._url,
                             consumer_tag=self._consumer_tag)
                else:
                    if self._connected:  # a lost connection was noted when it closed
                        self._note(f"consumer on queue {self._queue_name!r} detached: the "
                                   "broker cancelled it (queue deleted?)")
                    log.warning("consumer detached", queue=self._queue_name, broker=self._url,
                                connection_open=self._connected)
            was = now

    async def _try_consume(self) -> None:
        if self._live_channel() is None:
            return  # the robust channel is still being restored
        try:
            await self._consume()
        except Exception as exc:  # queue missing, channel closing: try again next period
            log.debug("consuming again failed, retrying", queue=self._queue_name,
                      error=type(exc).__name__)

    def describe(self) -> Mapping[str, Any]:
        """Status fields: ``type``, ``connected``, ``queue``, ``broker`` (password masked)."""
        return {"type": "RABBITMQ", "connected": self.attached, "queue": self._queue_name,
                "broker": self._url}
