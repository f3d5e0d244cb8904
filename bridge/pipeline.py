"""Deliveries -> CloudEvents -> batches -> PutEvents -> settle each message from its own
event's result (shared/design.md §1, §7). Knows only protocols, never a driver.

Fates, decided here and nowhere else:
- accepted by EG -> ``ack``;
- transient (network, timeout, 429, 5xx, server-error codes) -> back to the front of the queue,
  the sink enters its one backoff state, one probe request at a time until it answers;
- permanent for one event (over 64 KiB, unconvertible, any other per-event code) ->
  ``dead_letter`` with a reason; a request-level 400 is split until the bad event is alone;
- fatal for all (401, 403, 404) -> nothing is settled, intake stalls (prefetch), the state is
  ERROR, a slow probe retries, ``on_fatal`` lets the runtime re-check the source;
- held longer than ``max_hold_s`` while unsent -> ``requeue``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from bridge.backoff import Backoff
from bridge.batching import Batch, Batcher, Item
from bridge.consumers.base import Delivery
from bridge.errors import BridgeError, ConversionError, ErrorKind, EventGridError, TransportError
from bridge.eventgrid.models import MAX_EVENT_BYTES, PutEventsResult
from bridge.events import encode_event, to_cloudevent
from bridge.metrics import Metrics

log = structlog.get_logger("bridge.pipeline")
FATAL_PROBE_FLOOR_S = 5.0
"""Least spacing of probes while publishing fails fatally (configuration errors)."""
AUTH_PROBE_MAX_S = 300.0
"""Credentials EG refuses are probed ever more slowly, up to this many seconds: APIG locks an
AK for 5 minutes after 5 bad signatures (eg-api.md §2.2), which a steady probe would renew."""


class Publisher(Protocol):
    """Sends one PutEvents request (bridge.eventgrid.client.EventGridClient satisfies it)."""

    async def put_events(self, channel_id: str, body: bytes) -> PutEventsResult:
        """Publish ``body`` (``{"events":[...]}``); raise EventGridError/TransportError."""
        ...


class Pipeline:
    """Batches and publishes deliveries and settles each one.

    Args:
        publisher: the EG client.
        channel_id: the source's channel.
        source_name: every event's ``source`` (design §6).
        event_type: CloudEvent ``type`` when the message carries none.
        metrics: counters to update.
        max_batch_events: events per request (EG limit 20).
        linger_s: how long a batch waits for more events, in seconds.
        max_in_flight: concurrent PutEvents requests while the sink is healthy.
        initial_backoff_s, max_backoff_s: the retry schedule (design §7).
        max_hold_s: a message is settled within this many seconds of its receipt: one still
            unsent when a request could no longer finish in time (``max_hold_s`` minus
            ``request_timeout_s``) is requeued (RabbitMQ's consumer_timeout, design §7).
        request_timeout_s: the EG client's timeout for one request, in seconds.
        on_fatal: called with the error when publishing fails for every event.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        channel_id: str,
        source_name: str,
        event_type: str,
        metrics: Metrics,
        max_batch_events: int = 20,
        linger_s: float = 0.005,
        max_in_flight: int = 16,
        initial_backoff_s: float = 0.2,
        max_backoff_s: float = 30.0,
        max_hold_s: float = 600.0,
        request_timeout_s: float = 10.0,
        on_fatal: Callable[[BridgeError], None] | None = None,
    ) -> None:
        self._publisher = publisher
        self._channel_id = channel_id
        self._source = source_name
        self._type = event_type
        self._metrics = metrics
        self._batcher: Batcher[Delivery] = Batcher(max_batch_events, linger_s=linger_s)
        self._max_in_flight = max_in_flight
        self._max_hold_s = max_hold_s
        self._send_within_s = max(max_hold_s - request_timeout_s, max_hold_s / 2)
        self._on_fatal = on_fatal
        self.backoff = Backoff(initial_backoff_s, max_backoff_s)
        self._pending: deque[Batch[Delivery]] = deque()
        self._sending: dict[asyncio.Task[None], Batch[Delivery]] = {}
        self._wake = asyncio.Event()
        self._slot = asyncio.Event()
        self._linger: asyncio.TimerHandle | None = None
        self.unsettled = 0
        self._idle = asyncio.Event()
        self._draining = False
        self.fatal_error: BridgeError | None = None
        self._fatal_count = 0
        self.last_error: dict[str, Any] | None = None
        self.last_message_at: datetime | None = None

    # -- intake (synchronous: called by the consumer for each message) -----------------------

    def handle(self, delivery: Delivery) -> None:
        """Convert ``delivery`` and queue its event; dead-letter it when it cannot be sent."""
        m = self._metrics
        m.messages_received.inc()
        if delivery.redelivered:
            m.redeliveries.inc()
        self.last_message_at = datetime.now(UTC)
        try:
            event = to_cloudevent(delivery.message, source=self._source, default_type=self._type)
            encoded = encode_event(event)
        except ConversionError as exc:
            self._dead_letter(delivery, "unconvertible", "", str(exc))
            return
        item: Item[Delivery] = Item(delivery, event["id"], encoded)
        if len(encoded) > MAX_EVENT_BYTES or not self._batcher.fits_alone(item):
            self._dead_letter(delivery, "event_too_large", "",
                              f"event is {len(encoded)} bytes, EG takes {MAX_EVENT_BYTES}",
                              event["id"])
            return
        self.unsettled += 1
        m.in_flight.inc()
        for batch in self._batcher.add(item):
            self._enqueue(batch)
        if len(self._batcher) == 1 and self._linger is None:
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(self._batcher.linger_s, self._flush_linger)
        elif len(self._batcher) == 0 and self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _flush_linger(self) -> None:
        self._linger = None
        batch = self._batcher.flush()
        if batch is not None:
            self._enqueue(batch)

    def _enqueue(self, batch: Batch[Delivery], *, front: bool = False) -> None:
        if front:
            self._pending.appendleft(batch)
        else:
            self._pending.append(batch)
        self._wake.set()

    # -- sending ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch batches until cancelled (start it as a task)."""
        sweeper = asyncio.create_task(self._sweep_held())
        try:
            await self._dispatch()
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def _dispatch(self) -> None:
        while True:
            if not self._pending or self._draining:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.backoff.active:
                if not self._sending:
                    await self.backoff.wait()
                    if self._pending and self.backoff.active and not self._sending:
                        self._spawn(self._pending.popleft())  # one probe at a time
                        continue
                if self._sending:
                    self._slot.clear()
                    await self._slot.wait()
                continue
            if len(self._sending) >= self._max_in_flight:
                self._slot.clear()
                await self._slot.wait()
                continue
            self._spawn(self._pending.popleft())

    def _spawn(self, batch: Batch[Delivery]) -> None:
        task = asyncio.create_task(self._send(batch))
        self._sending[task] = batch
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.pop(task, None)
        self._slot.set()
        if not self._sending:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("publish task failed", exc_info=task.exception())

    def _drop_stale(self, items: list[Item[Delivery]]) -> list[Item[Delivery]]:
        """Forget deliveries the broker redelivers anyway (their channel closed): publishing
        them would send each event twice and hold memory for nothing (design §7)."""
        live = [i for i in items if not i.delivery.stale]
        if len(live) < len(items):
            for item in items:
                if item.delivery.stale:
                    self._done(item)
            self._metrics.stale_dropped.inc(len(items) - len(live))
            log.info("deliveries of a closed channel dropped; the broker redelivers them",
                     count=len(items) - len(live))
        return live

    async def _send(self, batch: Batch[Delivery]) -> None:
        batch.items[:] = self._drop_stale(batch.items)
        if not batch.items:
            return
        for item in batch.items:
            item.attempts += 1
        started = time.perf_counter()
        try:
            result = await self._publisher.put_events(self._channel_id, batch.body())
        except (EventGridError, TransportError) as exc:
            self._metrics.publish_failures.labels(exc.reason).inc()
            self._request_failed(batch, exc)
            return
        self._metrics.publish_duration.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(batch))
        self._recovered()
        self._settle(batch, result)

    def _settle(self, batch: Batch[Delivery], result: PutEventsResult) -> None:
        retry: list[Item[Delivery]] = []
        accepted = 0
        for item in batch.items:
            if item.event_id in result.accepted:
                accepted += 1
                self._done(item)
                item.delivery.ack()
                continue
            failure = result.failed.get(item.event_id)
            if failure is None or failure.kind is ErrorKind.TRANSIENT:
                retry.append(item)
            else:
                self._done(item)
                self._dead_letter(item.delivery, "eg_rejected", failure.error_code,
                                  failure.error_msg, item.event_id)
        self._metrics.events_published.inc(accepted)
        if retry:
            codes = sorted({result.failed[i.event_id].error_code for i in retry
                            if i.event_id in result.failed} or {"missing-result"})
            delay = self.backoff.failure()
            self._note_error("transient", ",".join(codes), "EG failed some events")
            log.warning("events failed transiently, retrying", events=len(retry),
                        error_codes=codes, retry_in_s=round(delay, 3))
            self._enqueue(Batch(retry), front=True)

    def _request_failed(self, batch: Batch[Delivery], exc: EventGridError | TransportError) -> None:
        code = getattr(exc, "error_code", "")
        kind = exc.kind
        if kind is ErrorKind.PERMANENT and len(batch) > 1:
            half = len(batch) // 2  # find the bad event(s): split until alone
            self._enqueue(Batch(batch.items[half:]), front=True)
            self._enqueue(Batch(batch.items[:half]), front=True)
            return
        if kind is ErrorKind.PERMANENT:
            item = batch.items[0]
            self._done(item)
            self._dead_letter(item.delivery, "eg_rejected", code, str(exc), item.event_id)
            return
        retry_after = exc.retry_after_s if isinstance(exc, EventGridError) else None
        floor = self._fatal_floor(exc) if kind is ErrorKind.FATAL else 0.0
        if not self.backoff.active and kind is ErrorKind.TRANSIENT:
            log.warning("publishing degraded: EG fails transiently, backing off",
                        reason=exc.reason, error_code=code)
        delay = self.backoff.failure(retry_after, floor_s=floor)
        self._note_error(str(kind), code, str(exc))
        self._enqueue(batch, front=True)
        if kind is ErrorKind.FATAL:
            first = self.fatal_error is None
            self.fatal_error = exc
            log.error("publishing fails for every event", reason=exc.reason, error_code=code,
                      error=str(exc), retry_in_s=round(delay, 3))
            if first and self._on_fatal is not None:
                self._on_fatal(exc)
        else:
            log.warning("publish failed, retrying", reason=exc.reason, error_code=code,
                        error=str(exc), events=len(batch), attempt=batch.items[0].attempts,
                        retry_in_s=round(delay, 3))

    def _fatal_floor(self, exc: EventGridError | TransportError) -> float:
        self._fatal_count += 1
        if exc.reason in ("auth", "forbidden"):
            return min(AUTH_PROBE_MAX_S, FATAL_PROBE_FLOOR_S * 2.0 ** (self._fatal_count - 1))
        return FATAL_PROBE_FLOOR_S

    def _recovered(self) -> None:
        if self.backoff.active or self.fatal_error is not None:
            log.info("publishing recovered", after_failures=self.backoff.failures)
        self.backoff.success()
        self.fatal_error = None
        self._fatal_count = 0

    def _note_error(self, kind: str, code: str, message: str) -> None:
        self.last_error = {"at": datetime.now(UTC).isoformat(), "kind": kind,
                           "error_code": code, "message": message[:500]}

    # -- settlement helpers --------------------------------------------------------------------

    def _done(self, item: Item[Delivery]) -> None:
        self.unsettled -= 1
        self._metrics.in_flight.dec()

    def _dead_letter(self, delivery: Delivery, reason: str, code: str, message: str,
                     event_id: str | None = None) -> None:
        self._metrics.dead_lettered.labels(reason).inc()
        self._note_error("permanent", code, f"{reason}: {message}")
        log.warning("message dead-lettered", reason=reason, error_code=code, error=message[:300],
                    message_id=delivery.message.message_id, event_id=event_id,
                    body_bytes=len(delivery.message.body))
        delivery.dead_letter(reason, code)

    async def _sweep_held(self) -> None:
        period = min(1.0, self._send_within_s / 4)
        while True:
            await asyncio.sleep(period)
            limit = time.monotonic() - self._send_within_s
            for batch in list(self._pending):
                batch.items[:] = self._drop_stale(batch.items)
                if not batch.items:
                    self._pending.remove(batch)
                    continue
                stale = [i for i in batch.items if i.held_since < limit]
                if not stale:
                    continue
                batch.items[:] = [i for i in batch.items if i.held_since >= limit]
                if not batch.items:
                    self._pending.remove(batch)
                for item in stale:
                    self._requeue(item)
                log.warning("messages held too long, requeued", count=len(stale),
                            max_hold_s=self._max_hold_s)

    def _requeue(self, item: Item[Delivery]) -> None:
        self._done(item)
        self._metrics.requeued.inc()
        item.delivery.requeue()

    # -- shutdown ------------------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> bool:
        """Stop sending new requests and wait for the ones in flight (design §7 shutdown).

        Messages not yet sent stay queued for :meth:`abort`, which requeues them.

        Returns:
            True when no request was still in flight after ``timeout_s`` seconds.
        """
        self._draining = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        batch = self._batcher.flush()
        if batch is not None:
            self._enqueue(batch)
        if self._sending:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        return not self._sending

    async def abort(self) -> int:
        """Cancel what is still sending and requeue every unsettled message.

        Returns:
            How many messages were requeued.
        """
        sending = list(self._sending.items())
        for task, _ in sending:
            task.cancel()
        for task, _ in sending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        leftovers = [b for t, b in sending if t.cancelled()] + list(self._pending)
        self._pending.clear()
        open_batch = self._batcher.flush()
        if open_batch is not None:
            leftovers.append(open_batch)
        count = 0
        for batch in leftovers:
            for item in batch.items:
                self._requeue(item)
                count += 1
        return count

    @property
    def state(self) -> str:
        """``ok``, ``backoff`` (transient failures) or ``fatal``."""
        if self.fatal_error is not None:
            return "fatal"
        return "backoff" if self.backoff.active else "ok"
