"""RocketMQ consumer on rocketmq-client-python 2.0.0 over librocketmq (issue 6;
shared/rocketmq.md §1; shared/design.md §6, §7).

A clustering ``PushConsumer`` of ``detail.group`` subscribed to ``detail.topic`` with the tag
expression ``connection.tags``, batch size 1, ``connection.threads`` consume threads (so at
most that many messages are in the pipeline at once). Each callback runs on a native thread:
it copies the message (the C pointer dies with the callback), hands a :class:`RocketDelivery`
to the loop with ``call_soon_threadsafe`` and blocks on it until the pipeline settles it: ack
-> ``CONSUME_SUCCESS``; requeue -> ``RECONSUME_LATER`` (the client sends its pull batch back
to ``%RETRY%<group>``, see :mod:`bridge.consumers.rocketmq_delivery`). While EG fails
transiently the pipeline keeps retrying, so the thread keeps waiting (an outage does not walk
messages to ``%DLQ%``).

Dead letters (design §7): ``RECONSUME_LATER`` would send the whole pull batch back, so the
bridge publishes a copy of a message EG rejects for good itself, with a native ``Producer``
(same name servers and ACL keys; its own producer group ``<group>-eg-bridge-dlq`` and
instance name, so it gets its own client factory; started before the consumer, shut down
after it), to ``connection.dead_letter_topic`` or else ``%DLQ%<group>``. The consume thread
that holds the message sends it (``send_sync``, off the loop) and returns ``CONSUME_SUCCESS``
only after ``SEND_OK``; any failure logs an ERROR and returns ``RECONSUME_LATER`` (the
broker's own retry path to ``%DLQ%<group>``).

Rules from rocketmq.md §1 applied here: never raise from the callback; keep a strong reference
to the native consumer for the life of the process; start and shutdown off the event loop
thread; a stop flag before shutdown; ``SetPushConsumerMessageTrace(handle, 0)`` before start
(the 2.1.0 library otherwise segfaults in shutdown; side effect: the client also publishes
trace records); no TLS in this client, so ``ssl_enable: true`` is a configuration error.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import structlog

from bridge.consumers.base import DeliveryHandler
from bridge.consumers.rocketmq_delivery import (
    CONSUME_SUCCESS,
    RECONSUME_LATER,
    RocketDelivery,
    copy_message,
    dead_letter_properties,
)
from bridge.consumers.rocketmq_probe import (
    LIKELY_CAUSES,
    RouteProblem,
    check_route,
    topic_exists,
)
from bridge.errors import ConfigError, ConsumerError
from bridge.events import InboundMessage
from bridge.settings import ConnectionSettings, SourceDetail, host_port

log = structlog.get_logger("bridge.consumers.rocketmq")
INSTALL_HINT = ("pip install -e '.[rocketmq]' from the eg-bridge checkout, then "
                "python -m bridge.consumers.rocketmq_install "
                "(rocketmq-client-python 2.0.0 and its native librocketmq)")
SHUTDOWN_RELEASE_S = 0.5
"""Callbacks that arrive after the stop flag are held this long into the native shutdown, so
the consume pool is stopped before they return: pull batches still queued are not started
(they stay uncommitted and are consumed after a restart) instead of being sent back."""
_KEEP_ALIVE: list[Any] = []
"""Native consumers live as long as the process: their ctypes callbacks must never be freed."""
DLQ_PREFIX = "%DLQ%"
SEND_OK = 0
"""``rocketmq.client.SendStatus.SEND_OK``; the other statuses (flush or slave timeouts) count
as failures: the copy may not be durable, so the original is kept."""
DEAD_LETTER_SEND_TIMEOUT_MS = 3000
"""One attempt of a dead-letter send (the client tries up to three times)."""
PROBE_PERIOD_S = 5.0
"""How often :meth:`RocketConsumer.watch` checks that the name server and broker answer."""
PROBE_TIMEOUT_S = 2.0
"""Per connection and per answer of one probe request (asyncio streams, on the loop)."""
_TOPIC_NAME = re.compile(r"[%|a-zA-Z0-9_-]{1,127}")
"""The broker's topic name rule (Java ``TopicValidator``)."""


def load_driver() -> tuple[ModuleType, Any]:
    """Import ``rocketmq.client`` and its loaded library (lazily: RabbitMQ never loads it).

    Raises:
        ConfigError: the client or its native library is missing; the text says how to
            install both.
    """
    try:
        from rocketmq import client, ffi  # type: ignore[import-untyped, import-not-found, unused-ignore]  # noqa: PLC0415
    except (ImportError, OSError) as exc:
        raise ConfigError([f"source.type ROCKETMQ: the RocketMQ client cannot be loaded "
                           f"({type(exc).__name__}: {exc}); install it: {INSTALL_HINT}"]) from None
    return client, ffi.dll


def name_servers(value: str) -> str:
    """``detail.namesrv_address`` as the client wants it: ``h1:p1;h2:p2`` (commas accepted).

    Raises:
        ValueError: an entry is not ``host:port``.
    """
    entries = [e.strip() for e in value.replace(",", ";").split(";") if e.strip()]
    for entry in entries:
        host_port(entry)
    if not entries:
        raise ValueError("no name server address")
    return ";".join(entries)


class RocketConsumer:
    """Consumes one topic for one group and hands each message to the pipeline.

    Args:
        detail: the source detail: ``group``, ``topic``, ``namesrv_address``, ``enable_acl``
            with ``access_key``/``secret_key``, ``ssl_enable``.
        connection: ``tags``, ``threads``, ``properties``, ``dead_letter_topic``.
        wait_timeout_s: the longest a consume thread waits for its message's settlement, in
            seconds; the pipeline settles within ``max_hold_s`` plus one request, so this is a
            safety net (then ``RECONSUME_LATER``; a late ack is ignored: a duplicate at most).

    Raises:
        ConfigError: ``ssl_enable`` is true (this client has no TLS), ACL keys are missing,
            the name server address is malformed, ``dead_letter_topic`` is not a topic name
            or is the consumed topic, or the library is not installed.
    """

    def __init__(self, detail: SourceDetail, connection: ConnectionSettings,
                 wait_timeout_s: float = 900.0) -> None:
        problems = []
        if detail.ssl_enable:
            problems.append("source.detail.ssl_enable: the RocketMQ TCP client "
                            "(rocketmq-client-python 2.0.0, client-cpp 2.1.0) has no TLS; use "
                            "an instance in PLAINTEXT or PERMISSIVE mode")
        if detail.enable_acl and not (detail.access_key and detail.secret_key):
            problems.append("source.detail: enable_acl needs access_key and secret_key")
        try:
            self._namesrv = name_servers(detail.namesrv_address or "")
        except ValueError as exc:
            problems.append(f"source.detail.namesrv_address: {exc}")
        dead_topic = connection.dead_letter_topic.strip()
        if dead_topic and not _TOPIC_NAME.fullmatch(dead_topic):
            problems.append("source.connection.dead_letter_topic: a topic name is 1-127 of "
                            "letters, digits, '%', '|', '_', '-'")
        elif dead_topic and dead_topic == detail.topic:
            problems.append("source.connection.dead_letter_topic: must not be the consumed "
                            "topic (rejected messages would come straight back)")
        if problems:
            raise ConfigError(problems)
        self._client, self._dll = load_driver()
        self._group, self._topic = detail.group or "", detail.topic or ""
        self._credentials = (detail.access_key.get_secret_value(),
                             detail.secret_key.get_secret_value()) if (
            detail.enable_acl and detail.access_key and detail.secret_key) else None
        self._conn = connection
        self._dead_topic = dead_topic or DLQ_PREFIX + self._group
        self._wait_timeout_s = wait_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: DeliveryHandler | None = None
        self._native: Any = None
        self._producer: Any = None
        self._started = False
        self._reachable = True
        self._problem = ""
        self._stopping = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._outstanding: set[RocketDelivery] = set()
        self.last_error: dict[str, Any] | None = None

    async def start(self, handler: DeliveryHandler) -> None:
        """Check the route, start the dead-letter producer (once), then create, configure and
        start the native push consumer.

        Raises:
            ConsumerError: the route check failed (the text names the step and the likely
                causes: name server, topic, ACL keys) or a native start failed.
        """
        self._loop = asyncio.get_running_loop()
        self._handler = handler
        try:
            await check_route(self._namesrv, self._topic, self._group, self._credentials)
            if self._producer is None:
                await self._check_dead_letter_topic()
                self._producer = await self._start_producer()
        except ConsumerError as exc:
            self._note(str(exc))
            raise
        native = self._client.PushConsumer(self._group)  # clustering is the default model
        _KEEP_ALIVE.append(native)
        native.set_name_server_address(self._namesrv)
        if self._credentials is not None:
            native.set_session_credentials(self._credentials[0], self._credentials[1], "")
        native.set_thread_count(self._conn.threads)
        native.set_message_batch_max_size(1)
        native.subscribe(self._topic, self._on_message, self._conn.tags or "*")
        self._dll.SetPushConsumerMessageTrace.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self._dll.SetPushConsumerMessageTrace(native._handle, 0)
        try:
            await asyncio.to_thread(native.start)
        except Exception as exc:
            text = str(exc).split(",error:")[0][:300]
            hint = f"; {LIKELY_CAUSES}" if "route" in text.lower() else ""
            self._note(f"RocketMQ consumer did not start: {text}{hint}")
            raise ConsumerError(f"RocketMQ consumer did not start: {text}{hint}") from None
        self._native = native
        self._reachable = True
        self._started = True
        log.info("consumer attached", topic=self._topic, group=self._group,
                 namesrv=self._namesrv, tags=self._conn.tags, threads=self._conn.threads,
                 acl=self._credentials is not None)

    def _note(self, message: str) -> None:
        self.last_error = {"at": datetime.now(UTC).isoformat(), "kind": "broker",
                           "error_code": "", "message": message[:500]}

    async def _check_dead_letter_topic(self) -> None:
        """Warn when the dead-letter topic has no route: sends to it fail until it exists (a
        broker creates ``%DLQ%<group>`` on the group's first dead letter of its own)."""
        if await topic_exists(self._namesrv, self._dead_topic, self._credentials) is False:
            log.warning("dead-letter topic does not exist (yet): until it does, a message EG "
                        "rejects goes back through %RETRY% and takes its pull batch with it; "
                        "create the topic or set connection.dead_letter_topic",
                        topic=self._dead_topic, group=self._group)

    async def _start_producer(self) -> Any:
        """Create and start the dead-letter producer (its own group and client instance).

        Raises:
            ConsumerError: the native start failed.
        """
        producer = self._client.Producer(f"{self._group}-eg-bridge-dlq",
                                         timeout=DEAD_LETTER_SEND_TIMEOUT_MS)
        _KEEP_ALIVE.append(producer)
        # A client instance of its own: not the consumer's MQClientFactory (rocketmq.md §1).
        self._dll.SetProducerInstanceName(producer._handle,
                                          f"eg-bridge-dlq-{os.getpid()}".encode())
        producer.set_name_server_address(self._namesrv)
        if self._credentials is not None:
            producer.set_session_credentials(self._credentials[0], self._credentials[1], "")
        try:
            await asyncio.to_thread(producer.start)
        except Exception as exc:
            text = str(exc).split(",error:")[0][:300]
            raise ConsumerError(f"RocketMQ dead-letter producer did not start: {text}"
                                ) from None
        log.info("dead-letter producer started", topic=self._dead_topic)
        return producer

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await asyncio.to_thread(producer.shutdown)
        except Exception as exc:
            log.warning("RocketMQ dead-letter producer shutdown failed", error=str(exc)[:300])

    # -- native consume threads ----------------------------------------------------------------

    def _on_message(self, msg: Any) -> int:
        """The native callback: returns a consume status and never raises."""
        try:
            if self._stopping.is_set():
                self._released.wait(self._wait_timeout_s)
                return RECONSUME_LATER
            message, reconsume = copy_message(msg, self._conn.properties)
            delivery = RocketDelivery(message, reconsume)
            with self._lock:
                self._outstanding.add(delivery)
            try:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._dispatch, delivery)
                if not delivery.wait(self._wait_timeout_s):
                    delivery.requeue()
                if delivery.rejection is not None:
                    return self._publish_dead_letter(delivery, *delivery.rejection)
                return delivery.status
            finally:
                with self._lock:
                    self._outstanding.discard(delivery)
        except BaseException:  # C must get a valid status (rocketmq.md §1 rule 5)
            return RECONSUME_LATER

    def _publish_dead_letter(self, delivery: RocketDelivery, reason: str, error_code: str) -> int:
        """On the consume thread: send a copy to the dead-letter topic; ``CONSUME_SUCCESS``
        after ``SEND_OK``, else log an ERROR and ``RECONSUME_LATER``. Never raises."""
        message = delivery.message
        try:
            dead_letter_id = self._send_dead_letter(message, reason, error_code)
        except Exception as exc:
            log.error("dead-letter publish failed, the message goes back through %RETRY%",
                      topic=self._dead_topic, reason=reason, error_code=error_code,
                      message_id=message.message_id,
                      error=f"{type(exc).__name__}: {str(exc).split(',error:')[0][:300]}")
            return RECONSUME_LATER
        log.warning("message published to the dead-letter topic", topic=self._dead_topic,
                    reason=reason, error_code=error_code, message_id=message.message_id,
                    dead_letter_id=dead_letter_id)
        return CONSUME_SUCCESS

    def _send_dead_letter(self, message: InboundMessage, reason: str, error_code: str) -> str:
        """``send_sync`` the copy (blocks this thread); returns its message id.

        Raises:
            RuntimeError: no producer, or a status other than ``SEND_OK``.
            rocketmq.exceptions.RocketMQException: the send failed (no route, timeout, ...).
        """
        producer = self._producer
        if producer is None:
            raise RuntimeError("the dead-letter producer is not running")
        copy = self._client.Message(self._dead_topic)
        try:
            copy.set_body(message.body)  # a C string: the body already ends at the first NUL
            if message.subject:
                copy.set_tags(message.subject)
            if message.keys:
                copy.set_keys(message.keys)
            for name, value in dead_letter_properties(message, reason, error_code).items():
                copy.set_property(name, value)
            result = producer.send_sync(copy)
        finally:
            self._dll.DestroyMessage(copy._handle)  # the 2.0.0 wrapper never frees it (#96)
        if int(result.status) != SEND_OK:
            raise RuntimeError(f"send status {result.status!r}, the copy may not be durable")
        return str(result.msg_id)

    def _dispatch(self, delivery: RocketDelivery) -> None:
        """On the loop thread: hand the delivery to the pipeline."""
        if delivery.reconsume_times:
            log.info("message redelivered by the broker", message_id=delivery.message.message_id,
                     reconsume_times=delivery.reconsume_times)
        if self._handler is None or self._stopping.is_set():
            delivery.requeue()
            return
        try:
            self._handler(delivery)
        except Exception:
            log.exception("pipeline refused a message; it goes back to the broker")
            delivery.requeue()

    # -- lifecycle ----------------------------------------------------------------------------

    async def stop_intake(self) -> None:
        """Set the stop flag: callbacks from now on hand nothing to the pipeline and return
        ``RECONSUME_LATER`` once the shutdown has stopped the consume pool."""
        if not self._stopping.is_set():
            self._stopping.set()
            log.info("consumer intake stopped", topic=self._topic, group=self._group)

    def _release(self) -> None:
        self._released.set()
        with self._lock:
            held = list(self._outstanding)
        for delivery in held:
            delivery.requeue()

    async def close(self) -> None:
        """Shut the native consumer down off the loop (it joins the consume threads and commits
        the final offsets; messages still held return ``RECONSUME_LATER``), then the
        dead-letter producer."""
        await self.stop_intake()
        if self._native is None or not self._started:
            self._release()
            await self._stop_producer()
            return
        self._started = False
        assert self._loop is not None
        timer = self._loop.call_later(SHUTDOWN_RELEASE_S, self._release)
        try:
            await asyncio.to_thread(self._native.shutdown)
        except Exception as exc:
            log.warning("RocketMQ consumer shutdown failed", error=str(exc)[:300])
        finally:
            timer.cancel()
            self._release()
        await self._stop_producer()  # after the consumer: its threads may still be sending
        log.info("consumer closed", topic=self._topic, group=self._group)

    @property
    def attached(self) -> bool:
        """The native consumer started, is not shut down, and the last reachability probe
        (every :data:`PROBE_PERIOD_S` in :meth:`watch`) reached the name server and the broker.

        The C API reports no connection state, so the probe asks what the start-up check asks
        (the topic's route, then the group's offset at the master broker) over connections of
        its own (design §8).
        """
        return self._started and self._reachable

    async def probe(self, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
        """Ask the name servers for the route and the master broker for the group's offset.

        Returns:
            None when both answered, else the problem (no credential in it). Never raises.
        """
        # check_route bounds every step; this bounds the whole (each name server, the broker).
        limit = 3 * timeout_s * (self._namesrv.count(";") + 2)
        try:
            await asyncio.wait_for(check_route(self._namesrv, self._topic, self._group,
                                               self._credentials, timeout_s), limit)
        except RouteProblem as exc:
            return str(exc).replace(f"; {LIKELY_CAUSES}", "")
        except TimeoutError:
            return f"the name server or broker did not answer within {limit:g} s"
        except Exception as exc:  # a malformed answer: report it, keep watching
            return f"probe failed: {type(exc).__name__}"
        return None

    async def watch(self, period_s: float = PROBE_PERIOD_S) -> None:
        """Probe the name server and broker every ``period_s`` seconds while the consumer runs,
        and log every change of :attr:`attached`, until cancelled (run it as a task).

        A failed probe (unreachable, or no route, or the broker refused the group): :attr:`attached`
        turns false, :attr:`last_error` names the name server or broker, one WARNING "consumer
        detached". Passing again: one INFO "consumer attached again"; readiness follows.
        """
        was = self.attached
        while True:
            await asyncio.sleep(period_s)
            if self._started and not self._stopping.is_set():
                problem = await self.probe()
                if problem is None:
                    self._reachable = True
                elif self._reachable:
                    self._reachable = False
                    self._note("RocketMQ consumer detached (name server or broker check failed): "
                               + problem)
                    self._problem = problem
            now = self.attached
            if now != was:
                if now:
                    log.info("consumer attached again", topic=self._topic, group=self._group,
                             namesrv=self._namesrv)
                elif self._started:
                    log.warning("consumer detached: name server or broker check failed",
                                topic=self._topic, group=self._group,
                                namesrv=self._namesrv, error=self._problem)
                else:
                    log.info("consumer detached", topic=self._topic)
            was = now

    def describe(self) -> Mapping[str, Any]:
        """Status fields: ``type``, ``connected``, ``topic``, ``group``, ``namesrv``."""
        return {"type": "ROCKETMQ", "connected": self.attached, "topic": self._topic,
                "group": self._group, "namesrv": self._namesrv}
