"""Wires the concrete parts and runs them in order (shared/design.md §2, §5, §7, §8).

Start: status server -> EG client -> register the source (retried; errors are reported, not
fatal) -> consumer -> pipeline. Stop (SIGTERM/SIGINT or :meth:`Bridge.stop`): stop intake ->
drain in-flight batches up to ``shutdown_grace_s`` -> requeue the rest -> close the broker ->
close HTTP -> stop the status server.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from bridge import __version__
from bridge.backoff import Backoff
from bridge.consumers.base import Consumer
from bridge.errors import BridgeError, ConfigError, ErrorKind, EventGridError, RegistrationError
from bridge.eventgrid.auth import AkSkAuth, Auth, NoAuth, TokenAuth
from bridge.eventgrid.client import EventGridClient
from bridge.eventgrid.iam import IamTokenAuth
from bridge.eventgrid.registration import SourceSpec, ensure_source
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.settings import Settings
from bridge.status import StatusServer

log = structlog.get_logger("bridge.runtime")
SECRET_DETAIL_KEYS = frozenset({"password", "secret_key", "access_key"})
REGISTRATION_SLOW_RETRY_S = 30.0


def build_auth(settings: Settings) -> Auth:
    """The :class:`Auth` for ``eventgrid.auth`` (design §3; shared/eg-api.md §2): a static
    token, IAM password tokens (refreshed ahead of expiry; its session opens on first use and
    closes with the client), AK/SK signatures with ``X-Project-Id`` = ``eventgrid.project_id``,
    or none.

    Raises:
        ConfigError: no mode is set (the settings model already prevents that).
    """
    eg = settings.eventgrid
    auth = eg.auth
    if auth.token is not None:
        return TokenAuth(auth.token)
    iam, aksk = auth.iam, auth.aksk
    if iam is not None and iam.password is not None:
        return IamTokenAuth(iam.endpoint, iam.domain, iam.user, iam.password, iam.project,
                            timeout_s=eg.request_timeout_s)
    if aksk is not None and aksk.secret_key is not None:
        return AkSkAuth(aksk.access_key, aksk.secret_key, eg.project_id)
    if auth.none:
        return NoAuth()
    raise ConfigError([f"eventgrid.auth.{auth.mode}: incomplete"])


def build_client(settings: Settings) -> EventGridClient:
    """The EG client for ``settings``; pooled connections cover the in-flight batches."""
    eg = settings.eventgrid
    return EventGridClient(eg.endpoint, eg.project_id, build_auth(settings),
                           timeout_s=eg.request_timeout_s,
                           max_connections=settings.forwarding.max_in_flight_batches + 4)


def build_consumer(settings: Settings) -> Consumer:
    """The broker consumer for ``source.type`` (drivers load lazily)."""
    if settings.source.type == "RABBITMQ":
        from bridge.consumers.rabbitmq import RabbitConsumer  # noqa: PLC0415

        return RabbitConsumer(settings.source.detail, settings.source.connection,
                              connection_name=f"eg-bridge {settings.source.name}",
                              prefetch=settings.prefetch())
    from bridge.consumers.rocketmq import RocketConsumer  # noqa: PLC0415

    # A consume thread waits for its message's settlement: the pipeline settles within
    # max_hold_s plus one request (design §7); the margin only guards against a lost delivery.
    fwd, eg = settings.forwarding, settings.eventgrid
    return RocketConsumer(settings.source.detail, settings.source.connection,
                          wait_timeout_s=fwd.max_hold_s + 2 * eg.request_timeout_s + 30)


def source_spec(settings: Settings) -> SourceSpec:
    """What the EG source must look like, from ``settings.source`` (design §5)."""
    src = settings.source
    detail = src.detail.model_dump(mode="python", exclude_none=True)
    for key in SECRET_DETAIL_KEYS & detail.keys():
        detail[key] = detail[key].get_secret_value()
    return SourceSpec(name=src.name, channel_id=src.channel_id, description=src.description,
                      register_type=src.register_type, detail=detail)


def mask_source(source: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an EG source object with secret ``detail`` values masked."""
    masked = dict(source)
    if isinstance(masked.get("detail"), Mapping):
        masked["detail"] = {k: ("***" if k in SECRET_DETAIL_KEYS and v else v)
                            for k, v in masked["detail"].items()}
    return masked


class Bridge:
    """One source's bridge: registration, consumer, pipeline and status.

    Args:
        settings: validated configuration.
        redact: masks secrets in text shown by /status (the logging redactor).
    """

    def __init__(self, settings: Settings, redact: Any = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._redact = redact or (lambda s: s)
        self.client = build_client(settings)
        self.consumer = build_consumer(settings)
        fwd = settings.forwarding
        self.pipeline = Pipeline(
            self.client, channel_id=settings.source.channel_id, source_name=settings.source.name,
            event_type=fwd.event_type, metrics=self.metrics, max_batch_events=fwd.max_batch_events,
            linger_s=fwd.linger_ms / 1000, max_in_flight=fwd.max_in_flight_batches,
            initial_backoff_s=fwd.retry.initial_backoff_s, max_backoff_s=fwd.retry.max_backoff_s,
            max_hold_s=fwd.max_hold_s, request_timeout_s=settings.eventgrid.request_timeout_s,
            on_fatal=self._on_publish_fatal,
        )
        self.status_server = StatusServer(settings.status.listen, self)
        self.source: dict[str, Any] | None = None
        self._phase = "STARTING"
        self._error: dict[str, Any] | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.started_at = datetime.now(UTC)

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the bridge to drain and stop (what SIGTERM does)."""
        if not self._stop.is_set():
            log.info("stop requested, draining")
        self._stop.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when ``handle_signals``), then drain.

        Raises:
            OSError: the status address cannot be bound (the CLI exits 1).
        """
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        await self.status_server.start()
        log.info("status server listening", url=self.status_server.url)
        try:
            if await self._start():
                await self._stop.wait()
        finally:
            await self._shutdown()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _start(self) -> bool:
        self._phase = "REGISTERING"
        if not await self._until_stopped(self._register):
            return False
        if not await self._until_stopped(self._start_consumer):
            return False
        self._phase = "RUNNING"
        self._tasks.append(asyncio.create_task(self.pipeline.run()))
        self._tasks.append(asyncio.create_task(self._poll_source()))
        self._tasks.append(asyncio.create_task(self.consumer.watch()))
        log.info("bridge running", source=self.settings.source.name,
                 channel_id=self.settings.source.channel_id)
        return True

    async def _until_stopped(self, step: Any) -> bool:
        """Retry ``step`` until it succeeds (True) or a stop is requested (False)."""
        backoff = Backoff(self.settings.forwarding.retry.initial_backoff_s,
                          REGISTRATION_SLOW_RETRY_S)
        while not self._stop.is_set():
            try:
                await step()
            except BridgeError as exc:
                slow = not (isinstance(exc, EventGridError) and exc.kind is ErrorKind.TRANSIENT)
                delay = backoff.failure(floor_s=5.0 if slow else 0.0)
                self._set_error(exc)
                log.error(f"{step.__name__.strip('_').replace('_', ' ')} failed",
                          error=str(exc), retry_in_s=round(delay, 2))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            else:
                self._error = None
                return True
        return False

    async def _register(self) -> None:
        self.source, action = await ensure_source(self.client, source_spec(self.settings))
        self.metrics.set_source_status(str(self.source.get("status", "UNKNOWN")))
        log.info(f"source {action}", source=self.source.get("name"),
                 source_id=self.source.get("id"), status=self.source.get("status"))

    async def _start_consumer(self) -> None:
        await self.consumer.start(self.pipeline.handle)
        self.metrics.consumer_connected.set(1)

    async def _shutdown(self) -> None:
        self._phase = "DRAINING"
        await self.consumer.stop_intake()
        grace = self.settings.forwarding.shutdown_grace_s
        drained = await self.pipeline.drain(grace)
        if drained:
            log.info("in-flight batches finished", unsent=self.pipeline.unsettled)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        requeued = await self.pipeline.abort()
        if not drained:
            log.warning("shutdown grace ended, unsent messages requeued", requeued=requeued,
                        shutdown_grace_s=grace)
        elif requeued:
            log.info("unsent messages requeued", requeued=requeued)
        await self.consumer.close()
        await self.client.close()
        self.metrics.consumer_connected.set(0)
        log.info("bridge stopped", requeued=requeued)
        await self.status_server.stop()

    # -- source checks -----------------------------------------------------------------------

    def _on_publish_fatal(self, exc: BridgeError) -> None:
        self._tasks.append(asyncio.create_task(self._check_source()))

    async def _poll_source(self) -> None:
        while True:
            await asyncio.sleep(self.settings.status.status_poll_s)
            await self._check_source()

    async def _check_source(self) -> None:
        """Re-read the source; re-create it when it was deleted behind the bridge's back."""
        if self.source is None:
            return
        try:
            self.source = await self.client.get_source(self.source["id"])
        except EventGridError as exc:
            if exc.status != 404:
                log.warning("source check failed", error=str(exc))
                return
            log.warning("source deleted behind the bridge's back, re-creating",
                        source=self.settings.source.name)
            try:
                await self._register()
            except BridgeError as again:
                self._set_error(again)
                log.error("re-creating the source failed", error=str(again))
            return
        except BridgeError as exc:
            log.warning("source check failed", error=str(exc))
            return
        self.metrics.set_source_status(str(self.source.get("status", "UNKNOWN")))

    # -- status ------------------------------------------------------------------------------

    def _set_error(self, exc: BaseException) -> None:
        kind = "config" if isinstance(exc, RegistrationError | ConfigError) else type(exc).__name__
        self._error = {"at": datetime.now(UTC).isoformat(), "kind": kind,
                       "error_code": getattr(exc, "error_code", ""),
                       "message": self._redact(str(exc))[:500]}

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason) per design §8."""
        if self._phase == "DRAINING":
            return False, "draining"
        if self.source is None:
            reason = self._error["message"] if self._error else "source not registered yet"
            return False, f"source not registered: {reason}"
        if not self.consumer.attached:
            return False, "broker consumer not attached"
        if self.pipeline.fatal_error is not None:
            return False, f"publishing fails: {self._redact(str(self.pipeline.fatal_error))}"
        return True, ""

    @property
    def state(self) -> str:
        """STARTING, REGISTERING, RUNNING, DEGRADED, ERROR or DRAINING (design §8)."""
        if self._phase in ("STARTING", "DRAINING"):
            return self._phase
        ready, _ = self.readiness()
        if self._phase == "REGISTERING":
            return "ERROR" if self._error else "REGISTERING"
        if not ready:
            return "ERROR"
        return "DEGRADED" if self.pipeline.state == "backoff" else "RUNNING"

    def status(self) -> Mapping[str, Any]:
        """The /status document (design §8)."""
        src = self.source or {}
        m = self.metrics
        errors = [e for e in (self.pipeline.last_error, self._error, self.consumer.last_error)
                  if e]
        last_error = max(errors, key=lambda e: str(e["at"])) if errors else None
        if last_error is not None:
            last_error = {**last_error, "message": self._redact(str(last_error["message"]))}
        return {
            "state": self.state,
            "ready": self.readiness()[0],
            "reason": self.readiness()[1],
            "source": {"id": src.get("id"), "name": self.settings.source.name,
                       "status": src.get("status"), "error_info": src.get("error_info") or {},
                       "channel_id": self.settings.source.channel_id},
            "consumer": {**self.consumer.describe(), "in_flight": self.pipeline.unsettled,
                         "last_message_at": self.pipeline.last_message_at.isoformat()
                         if self.pipeline.last_message_at else None},
            "counters": {
                "messages_received": int(m.messages_received._value.get()),
                "events_published": int(m.events_published._value.get()),
            },
            "last_error": last_error,
            "started_at": self.started_at.isoformat(),
            "version": __version__,
        }

    def metrics_text(self) -> bytes:
        """Prometheus text for /metrics."""
        self.metrics.consumer_connected.set(1 if self.consumer.attached else 0)
        return self.metrics.render()
