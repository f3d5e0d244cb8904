"""Pipeline fates, driven through its two seams: a recording Delivery and a scripted
Publisher (the real EG client and RabbitMQ are covered by tests/integration)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from bridge.errors import EventGridError, TransportError
from bridge.eventgrid.models import EventFailure, PutEventsResult
from bridge.events import InboundMessage
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline


class FakeDelivery:
    def __init__(self, body: bytes, message_id: str | None) -> None:
        self.message = InboundMessage(body=body, received_at=datetime.now(UTC),
                                      message_id=message_id)
        self.redelivered = False
        self.stale = False
        self.fates: list[Any] = []

    def ack(self) -> None:
        self.fates.append("ack")

    def requeue(self) -> None:
        self.fates.append("requeue")

    def dead_letter(self, reason: str, error_code: str) -> None:
        self.fates.append(("dead", reason, error_code))


Script = Callable[[list[dict[str, Any]]], PutEventsResult]


class ScriptedPublisher:
    """Answers each call with the next scripted behaviour, then accepts everything."""

    def __init__(self, *script: Any, delay_s: float = 0.0) -> None:
        self.script = list(script)
        self.calls: list[tuple[float, list[str]]] = []
        self.delay_s = delay_s

    async def put_events(self, channel_id: str, body: bytes) -> PutEventsResult:
        events = orjson.loads(body)["events"]
        ids = [e["id"] for e in events]
        self.calls.append((asyncio.get_running_loop().time(), ids))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        if callable(step):
            result: PutEventsResult = step(events)
            return result
        return PutEventsResult(frozenset(ids))


def make(publisher: ScriptedPublisher, **kw: Any) -> tuple[Pipeline, Metrics]:
    metrics = Metrics()
    options: dict[str, Any] = {"linger_s": 0.001, "initial_backoff_s": 0.01,
                               "max_backoff_s": 0.05}
    options.update(kw)
    p = Pipeline(publisher, channel_id="c", source_name="src", event_type="t",
                 metrics=metrics, **options)
    return p, metrics


async def run_until_settled(p: Pipeline, deliveries: list[FakeDelivery],
                            timeout: float = 5.0) -> None:
    task = asyncio.create_task(p.run())
    try:
        for d in deliveries:
            p.handle(d)
        deadline = asyncio.get_running_loop().time() + timeout
        while p.unsettled and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert p.unsettled == 0, f"{p.unsettled} unsettled"
    finally:
        task.cancel()


def deliveries(n: int, size: int = 10) -> list[FakeDelivery]:
    return [FakeDelivery(orjson.dumps({"i": i, "pad": "x" * size}), f"id-{i}") for i in range(n)]


async def test_every_message_acked_once_in_batches_of_at_most_20() -> None:
    pub = ScriptedPublisher()
    p, metrics = make(pub)
    ds = deliveries(95)
    await run_until_settled(p, ds)
    assert all(d.fates == ["ack"] for d in ds)
    assert max(len(ids) for _, ids in pub.calls) <= 20
    assert sorted(i for _, ids in pub.calls for i in ids) == sorted(f"id-{i}" for i in range(95))
    assert metrics.events_published._value.get() == 95


async def test_batches_respect_256_kib() -> None:
    pub = ScriptedPublisher()
    p, _ = make(pub)
    ds = deliveries(20, size=60_000)  # 60 KB events: 4 fit in 256 KiB
    await run_until_settled(p, ds)
    assert all(d.fates == ["ack"] for d in ds)
    assert max(len(ids) for _, ids in pub.calls) == 4


async def test_oversized_event_dead_lettered_not_sent() -> None:
    pub = ScriptedPublisher()
    p, metrics = make(pub)
    big = FakeDelivery(orjson.dumps({"pad": "x" * 100 * 1024}), "big")
    small = deliveries(3)
    await run_until_settled(p, [big, *small])
    assert big.fates == [("dead", "event_too_large", "")]
    assert all(d.fates == ["ack"] for d in small)
    assert all("big" not in ids for _, ids in pub.calls)
    assert metrics.dead_lettered.labels("event_too_large")._value.get() == 1


async def test_partial_failure_matched_by_event_id_not_position() -> None:
    def reject_3_and_17(events: list[dict[str, Any]]) -> PutEventsResult:
        ids = [e["id"] for e in events]
        bad = {"id-3": EventFailure("EG.00513000", "bad"),
               "id-17": EventFailure("EG.00015000", "server error")}
        return PutEventsResult(frozenset(ids) - bad.keys(), bad)

    pub = ScriptedPublisher(reject_3_and_17)
    p, _ = make(pub)
    ds = deliveries(20)
    await run_until_settled(p, ds)
    assert ds[3].fates == [("dead", "eg_rejected", "EG.00513000")]
    assert ds[17].fates == ["ack"]  # transient code: retried, then accepted
    assert [ids for _, ids in pub.calls][1] == ["id-17"]
    assert all(d.fates == ["ack"] for i, d in enumerate(ds) if i not in (3, 17))


async def test_transient_failures_retry_with_one_probe_in_flight() -> None:
    errors = [EventGridError(503, "EG.00015000", "down") for _ in range(5)]
    pub = ScriptedPublisher(*errors, delay_s=0.005)
    p, metrics = make(pub, max_in_flight=8)
    ds = deliveries(200)
    await run_until_settled(p, ds)
    assert all(d.fates == ["ack"] for d in ds)
    assert metrics.publish_failures.labels("server_error")._value.get() >= 5
    assert metrics.dead_lettered.labels("eg_rejected")._value.get() == 0


async def test_retry_after_is_honoured_and_capped() -> None:
    pub = ScriptedPublisher(EventGridError(429, "APIG.0308", "slow down", retry_after_s=0.3))
    p, _ = make(pub, max_backoff_s=1.0)
    ds = deliveries(1)
    await run_until_settled(p, ds)
    (t0, _), (t1, _) = pub.calls[0], pub.calls[1]
    assert t1 - t0 >= 0.29
    assert ds[0].fates == ["ack"]


async def test_request_level_400_is_split_to_isolate_the_bad_event() -> None:
    def fail_if_contains_7(events: list[dict[str, Any]]) -> PutEventsResult:
        ids = [e["id"] for e in events]
        if "id-7" in ids:
            raise EventGridError(400, "EG.00513000", "invalid event")
        return PutEventsResult(frozenset(ids))

    pub = ScriptedPublisher(*[fail_if_contains_7] * 20)
    p, _ = make(pub)
    ds = deliveries(20)
    await run_until_settled(p, ds)
    assert ds[7].fates == [("dead", "eg_rejected", "EG.00513000")]
    assert all(d.fates == ["ack"] for i, d in enumerate(ds) if i != 7)


async def test_fatal_error_settles_nothing_and_reports() -> None:
    fatal = [EventGridError(404, "EG.00014040", "no such source")] * 2
    seen: list[Exception] = []
    pub = ScriptedPublisher(*fatal)
    p, _ = make(pub, on_fatal=seen.append, max_backoff_s=10.0)
    task = asyncio.create_task(p.run())
    ds = deliveries(5)
    for d in ds:
        p.handle(d)
    await asyncio.sleep(0.2)
    assert p.state == "fatal"
    assert all(d.fates == [] for d in ds)
    assert len(seen) == 1
    task.cancel()
    assert await p.abort() == 5
    assert all(d.fates == ["requeue"] for d in ds)


async def test_network_error_is_transient() -> None:
    pub = ScriptedPublisher(TransportError("network", "refused"), TransportError("timeout", "t"))
    p, metrics = make(pub)
    ds = deliveries(3)
    await run_until_settled(p, ds)
    assert all(d.fates == ["ack"] for d in ds)
    assert metrics.publish_failures.labels("network")._value.get() == 1
    assert metrics.publish_failures.labels("timeout")._value.get() == 1


async def test_held_too_long_is_requeued() -> None:
    pub = ScriptedPublisher(*[EventGridError(503, "", "down")] * 1000)
    p, metrics = make(pub, max_hold_s=0.3, max_backoff_s=0.05)
    task = asyncio.create_task(p.run())
    ds = deliveries(3)
    for d in ds:
        p.handle(d)
    await asyncio.sleep(1.0)
    task.cancel()
    assert all(d.fates == ["requeue"] for d in ds)
    assert p.unsettled == 0
    assert metrics.requeued._value.get() == 3


async def test_duplicate_ids_never_share_a_batch() -> None:
    pub = ScriptedPublisher()
    p, _ = make(pub)
    ds = [FakeDelivery(b'{"a":1}', "same") for _ in range(3)]
    await run_until_settled(p, ds)
    assert all(d.fates == ["ack"] for d in ds)
    assert all(ids.count("same") <= 1 for _, ids in pub.calls)


@pytest.mark.parametrize("body", [b"plain text", b"\xff\xfe\x00binary"])
async def test_non_json_bodies_are_forwarded(body: bytes) -> None:
    pub = ScriptedPublisher()
    p, _ = make(pub)
    d = FakeDelivery(body, "x")
    await run_until_settled(p, [d])
    assert d.fates == ["ack"]


async def test_drain_finishes_in_flight_and_leaves_unsent_for_requeue() -> None:
    pub = ScriptedPublisher(delay_s=0.2)
    p, _ = make(pub, max_in_flight=2)
    task = asyncio.create_task(p.run())
    ds = deliveries(50)
    for d in ds:
        p.handle(d)
    await asyncio.sleep(0.05)  # two batches of 20 in flight, 10 unsent
    assert await p.drain(5.0)
    task.cancel()
    assert await p.abort() == 10
    acked = [d for d in ds if d.fates == ["ack"]]
    requeued = [d for d in ds if d.fates == ["requeue"]]
    assert (len(acked), len(requeued)) == (40, 10)
    assert len(pub.calls) == 2


async def test_unsent_messages_are_requeued_before_max_hold() -> None:
    pub = ScriptedPublisher(*[EventGridError(503, "", "down")] * 1000)
    p, _ = make(pub, max_hold_s=1.0, request_timeout_s=0.6, max_backoff_s=0.05)
    task = asyncio.create_task(p.run())
    ds = deliveries(2)
    for d in ds:
        p.handle(d)
    await asyncio.sleep(0.75)  # past max_hold_s - request_timeout_s = 0.4 s (+ sweep period)
    task.cancel()
    assert all(d.fates == ["requeue"] for d in ds)


async def test_stale_deliveries_are_never_published_nor_settled() -> None:
    pub = ScriptedPublisher(*[EventGridError(503, "", "down")] * 3)
    p, metrics = make(pub)
    task = asyncio.create_task(p.run())
    ds = deliveries(10)
    for d in ds:
        p.handle(d)
    await asyncio.sleep(0.02)
    for d in ds[:6]:
        d.stale = True  # their channel closed: the broker redelivers them
    deadline = asyncio.get_running_loop().time() + 5
    while p.unsettled and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    task.cancel()
    assert p.unsettled == 0
    assert all(d.fates == [] for d in ds[:6])
    assert all(d.fates == ["ack"] for d in ds[6:])
    sent_last = pub.calls[-1][1]
    assert sent_last == [f"id-{i}" for i in range(6, 10)]
    assert metrics.stale_dropped._value.get() == 6
