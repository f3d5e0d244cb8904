"""Connection faults, sink faults and shutdown against the real broker and the emulator
(issue 5, cases 1-8 and 15): nothing lost, nothing acked early, nothing retried forever."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
import yaml

from tests.support.amqp import declare_queue, publish_json, publish_raw
from tests.support.bridge import BridgeProcess, Emulator, bridge_config, status_port
from tests.support.proxy import TcpProxy
from tests.support.rabbit import RabbitServer

pytestmark = pytest.mark.integration




def start_bridge(tmp_path: Path, bridges: list[BridgeProcess], emulator: Emulator,
                 address: str, queue: str, **overrides: Any) -> BridgeProcess:
    cfg = bridge_config(emulator_url=emulator.url, rabbit_address=address, queue=queue,
                        source_name=f"f-{uuid.uuid4().hex[:8]}",
                        status_port=status_port(), overrides=overrides)
    bridge = BridgeProcess(tmp_path, cfg)
    bridges.append(bridge)
    bridge.start()
    return bridge


async def ready_code(bridge: BridgeProcess) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(bridge.status_url + "/readyz") as r:
            return r.status
    except aiohttp.ClientError:
        return 0


async def not_ready(bridge: BridgeProcess) -> bool:
    return await ready_code(bridge) == 503


async def is_ready(bridge: BridgeProcess) -> bool:
    return await ready_code(bridge) == 200


async def wait_until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = check()
        except KeyError:  # a queue not (yet) listed after a broker restart
            result = False
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def drain_queue(url: str, queue: str, timeout_s: float = 3.0) -> list[Any]:
    """Consume everything in ``queue`` (acking), return the messages."""
    got: list[Any] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = await q.get(fail=False)
            if message is None:
                await asyncio.sleep(0.1)
                continue
            await message.ack()
            got.append(message)
    return got


async def declare_dlx(url: str, exchange: str, dlq: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
        q = await channel.declare_queue(dlq, durable=True)
        await q.bind(ex)


def json_lines(bridge: BridgeProcess) -> list[dict[str, Any]]:
    out = []
    for line in bridge.log().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


# -- connection faults ---------------------------------------------------------------------


async def test_broker_crash_restores_one_consumer_with_its_prefetch_and_loses_nothing(
    rabbit_factory: Any, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    broker: RabbitServer = rabbit_factory()
    await declare_queue(broker.amqp_url, queue_name)
    first = await publish_json(broker.amqp_url, queue_name, [{"n": i} for i in range(50)])
    await emulator.fault(path="events", latency_ms=400)  # keep the 50 in flight
    bridge = start_bridge(tmp_path, bridges, emulator, broker.address, queue_name,
                          source={"connection": {"prefetch": 37, "reconnect_interval_s": 1}})
    await bridge.wait_ready()
    await wait_until(lambda: broker.queue_counts(queue_name)[1] > 0, 10, "deliveries in flight")
    await asyncio.to_thread(broker.kill)
    await wait_until(lambda: ready_code(bridge), 1, "a /readyz answer")
    codes = []
    for _ in range(20):  # 10 s of outage, sampled
        codes.append(await ready_code(bridge))
        await asyncio.sleep(0.5)
    assert set(codes) == {503}
    await asyncio.to_thread(broker.start)
    await emulator.clear_faults()
    await wait_until(lambda: is_ready(bridge), 30, "ready again")
    later = await publish_json(broker.amqp_url, queue_name, [{"m": i} for i in range(10)])
    await wait_until(lambda: broker.queue_counts(queue_name) == (0, 0), 30, "an empty queue")
    assert set(first) | set(later) <= {e["id"] for e in await emulator.events()}
    consumers = [c for c in broker.list_consumers() if c["queue_name"] == queue_name]
    assert len(consumers) == 1
    assert broker.channel_prefetch().count(37) == 1
    assert await ready_code(bridge) == 200


async def test_broker_flapping_during_an_eg_outage_sends_each_message_once(
    rabbit_factory: Any, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    broker: RabbitServer = rabbit_factory()
    await declare_queue(broker.amqp_url, queue_name)
    fault = await emulator.fault(path="events", status=503)
    ids = await publish_json(broker.amqp_url, queue_name, [{"n": i} for i in range(200)])
    bridge = start_bridge(tmp_path, bridges, emulator, broker.address, queue_name,
                          source={"connection": {"reconnect_interval_s": 1}},
                          forwarding={"retry": {"initial_backoff_s": 0.2, "max_backoff_s": 1}})
    await bridge.wait_ready()
    for _ in range(2):  # the broker goes away and comes back while EG is down
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)
        await wait_until(lambda: is_ready(bridge), 30, "ready again")
        await asyncio.sleep(2)
        status = await bridge.get_json("/status")
        assert status["consumer"]["in_flight"] <= 200  # stale deliveries are not kept
    async with aiohttp.ClientSession() as http:
        await http.delete(f"{emulator.url}/emulator/faults/{fault}")
    await wait_until(lambda: broker.queue_counts(queue_name) == (0, 0), 60, "an empty queue")
    await asyncio.sleep(1)
    events = await emulator.events()
    assert {e["id"] for e in events} == set(ids)
    assert len(events) == len(ids)  # nothing sent twice: the redelivered copy went alone
    assert (await bridge.metrics())["eg_bridge_stale_dropped_total"] > 0


async def test_queue_deleted_and_redeclared_consumption_resumes(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    bridge = start_bridge(tmp_path, bridges, emulator, rabbit.address, queue_name,
                          source={"connection": {"reconnect_interval_s": 1}})
    await bridge.wait_ready()
    connection = await aio_pika.connect(rabbit.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue_name)
    # While the queue is missing the consumer is gone: readiness says so.
    await wait_until(lambda: not_ready(bridge), 10, "not ready without a queue")

    async def broker_error() -> bool:
        status = await bridge.get_json("/status")
        return status["state"] == "ERROR" and (status["last_error"] or {}).get("kind") == "broker"

    await wait_until(broker_error, 5, "/status naming the broker problem")
    await declare_queue(rabbit.amqp_url, queue_name)
    await wait_until(lambda: is_ready(bridge), 30, "ready again")
    await wait_until(
        lambda: any(c["queue_name"] == queue_name for c in rabbit.list_consumers()), 30,
        "a consumer on the new queue")
    ids = await publish_json(rabbit.amqp_url, queue_name, [{"after": "redeclare"}])
    assert await emulator.wait_total(1, timeout_s=30) == 1
    assert {e["id"] for e in await emulator.events()} == set(ids)
    warnings = [r for r in json_lines(bridge) if r.get("level") == "warning"]
    assert any("cancel" in r["event"].lower() or "detached" in r["event"] for r in warnings)


async def test_dropped_connection_never_acks_stale_tags_and_redelivers_same_ids(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    for i in range(60):  # no message_id: the ids are hashed, and must be stable
        await publish_raw(rabbit.amqp_url, queue_name, json.dumps({"k": i}).encode(),
                          content_type="application/json")
    host, port = rabbit.address.split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    try:
        await emulator.fault(path="events", latency_ms=3000)  # in flight during the drop
        bridge = start_bridge(tmp_path, bridges, emulator, f"127.0.0.1:{proxy.port}",
                              queue_name, source={"connection": {"reconnect_interval_s": 1}})
        await bridge.wait_ready()
        await wait_until(lambda: rabbit.queue_counts(queue_name)[1] >= 20, 10, "in flight")
        await proxy.drop_connections()
        await emulator.clear_faults()
        await wait_until(lambda: rabbit.queue_counts(queue_name) == (0, 0), 30, "empty queue")
        await asyncio.sleep(4)  # the requests in flight at the drop (3 s latency) land too
    finally:
        await proxy.close()
    events = await emulator.events()
    assert len({e["id"] for e in events}) == 60  # every message, once per distinct id
    assert len(events) > 60  # the in-flight batches were redelivered ...
    by_data: dict[int, set[str]] = {}
    for e in events:
        by_data.setdefault(e["data"]["k"], set()).add(e["id"])
    assert all(len(ids) == 1 for ids in by_data.values())  # ... with the same CloudEvent ids
    assert proxy.accepted >= 2
    log = bridge.log() + rabbit.log_file.read_text(errors="replace")
    assert "PRECONDITION_FAILED" not in log
    assert "unknown delivery tag" not in log


async def test_hold_limit_requeues_before_the_broker_consumer_timeout(
    rabbit_factory: Any, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    broker: RabbitServer = rabbit_factory(
        conf_extra="consumer_timeout = 5000\n",
        advanced_config="[{rabbit, [{channel_tick_interval, 1000}]}].\n")
    await declare_queue(broker.amqp_url, queue_name)
    ids = await publish_json(broker.amqp_url, queue_name, [{"n": i} for i in range(9)])
    await emulator.fault(path="events", latency_ms=10_000, count=1)
    bridge = start_bridge(
        tmp_path, bridges, emulator, broker.address, queue_name,
        eventgrid={"request_timeout_s": 2},
        source={"connection": {"prefetch": 3, "consumer_timeout_s": 5}},
        forwarding={"max_hold_s": 4, "retry": {"initial_backoff_s": 0.5, "max_backoff_s": 1}},
    )
    await wait_until(lambda: broker.queue_counts(queue_name) == (0, 0), 60, "an empty queue")
    assert {e["id"] for e in await emulator.events()} >= set(ids)
    log = bridge.log() + broker.log_file.read_text(errors="replace")
    assert "delivery acknowledgement" not in log  # the broker never timed the consumer out
    assert "PRECONDITION_FAILED" not in log
    assert await ready_code(bridge) == 200


def test_startup_refuses_hold_or_timeout_reaching_consumer_timeout(tmp_path: Path) -> None:
    for forwarding, eventgrid in (({"max_hold_s": 5}, {}), ({"max_hold_s": 4},
                                                             {"request_timeout_s": 5})):
        cfg = bridge_config(emulator_url="http://127.0.0.1:1", rabbit_address="127.0.0.1:1",
                            queue="q", source_name="s", status_port=1,
                            overrides={"source": {"connection": {"consumer_timeout_s": 5}},
                                       "forwarding": forwarding, "eventgrid": eventgrid})
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        result = subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(path)],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 2
        assert "consumer_timeout_s" in result.stderr


# -- sink faults ---------------------------------------------------------------------------


async def test_sink_down_60s_one_backoff_no_hot_loop_then_everything_arrives(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    ids = await publish_json(rabbit.amqp_url, queue_name, [{"n": i} for i in range(1000)])
    fault = await emulator.fault(path="events", status=503)
    bridge = start_bridge(tmp_path, bridges, emulator, rabbit.address, queue_name,
                          source={"connection": {"prefetch": 10}},
                          forwarding={"retry": {"initial_backoff_s": 0.2, "max_backoff_s": 5}})
    await bridge.wait_ready()
    await asyncio.sleep(5)
    status = await bridge.get_json("/status")
    assert status["state"] == "DEGRADED"
    assert await ready_code(bridge) == 200  # a restart would not help: stay ready
    await asyncio.sleep(55)
    attempts = (await emulator.stats())["put_events_requests"]
    # One probe at a time, spaced by the backoff (mean >= 2.5 s once it reaches its 5 s cap):
    # a hot loop would make thousands of attempts in 60 s.
    assert 5 <= attempts <= 60
    async with aiohttp.ClientSession() as http:
        await http.delete(f"{emulator.url}/emulator/faults/{fault}")
    assert await emulator.wait_total(1000, timeout_s=60) == 1000
    assert {e["id"] for e in await emulator.events()} == set(ids)
    await wait_until(lambda: rabbit.queue_counts(queue_name) == (0, 0), 30, "an empty queue")
    metrics = await bridge.metrics_text()
    assert 'eg_bridge_dead_lettered_total{reason="eg_rejected"} 0.0' in metrics
    assert (await bridge.get_json("/status"))["state"] == "RUNNING"




@pytest.mark.parametrize(("retry_after", "max_backoff", "low", "high"), [
    ("2", 30, 4.0, 15.0),                              # honoured twice: >= 4 s
    ("3600", 1.5, 0.0, 8.0),                           # capped by max_backoff_s
    ("Wed, 21 Oct 2015 07:28:00 GMT", 30, 0.0, 3.0),   # a past date: normal backoff
    ("soon", 30, 0.0, 3.0),                            # unparsable: normal backoff
])
async def test_429_retry_after(
    retry_after: str, max_backoff: float, low: float, high: float,
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    bridge = start_bridge(tmp_path, bridges, emulator, rabbit.address, queue_name,
                          forwarding={"retry": {"initial_backoff_s": 0.2,
                                                "max_backoff_s": max_backoff}})
    await bridge.wait_ready()
    await emulator.fault(path="events", status=429, retry_after=retry_after, count=2)
    started = time.monotonic()
    await publish_json(rabbit.amqp_url, queue_name, [{"throttled": True}])
    assert await emulator.wait_total(1, timeout_s=30) == 1
    took = time.monotonic() - started
    assert low <= took <= high
    metrics = await bridge.metrics_text()
    assert 'eg_bridge_publish_failures_total{reason="throttled"} 2.0' in metrics
    assert 'eg_bridge_dead_lettered_total{reason="eg_rejected"} 0.0' in metrics


async def test_partial_failure_settles_each_message_by_event_id(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    dlq = f"{queue_name}.dlq"
    await declare_dlx(rabbit.amqp_url, f"{queue_name}.dlx", dlq)
    await declare_queue(rabbit.amqp_url, queue_name,
                        arguments={"x-dead-letter-exchange": f"{queue_name}.dlx"})
    ids = await publish_json(rabbit.amqp_url, queue_name, [{"n": i} for i in range(20)])
    await emulator.fault(path="events", event_ids=[ids[3]], error_code="EG.00513000")
    await emulator.fault(path="events", event_ids=[ids[17]], error_code="EG.00015000", count=1)
    bridge = start_bridge(tmp_path, bridges, emulator, rabbit.address, queue_name,
                          forwarding={"linger_ms": 200})
    assert await emulator.wait_total(19, timeout_s=30) == 19
    await wait_until(lambda: rabbit.queue_counts(queue_name) == (0, 0), 30, "an empty queue")
    got = {e["id"] for e in await emulator.events()}
    assert got == set(ids) - {ids[3]}
    dead = await drain_queue(rabbit.amqp_url, dlq)
    assert [m.message_id for m in dead] == [ids[3]]
    assert any(r["event"] == "message dead-lettered" and r["error_code"] == "EG.00513000"
               for r in json_lines(bridge))


@pytest.mark.parametrize("path", ["bridge_dlx", "queue_dlx", "no_dlx"])
async def test_dead_letter_paths_for_a_100_kib_message(
    path: str, rabbit: RabbitServer, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    dlx, dlq = f"{queue_name}.dlx", f"{queue_name}.dlq"
    arguments = None
    overrides: dict[str, Any] = {}
    if path in ("bridge_dlx", "queue_dlx"):
        await declare_dlx(rabbit.amqp_url, dlx, dlq)
    if path == "bridge_dlx":
        overrides = {"source": {"connection": {"dead_letter_exchange": dlx}}}
    if path == "queue_dlx":
        arguments = {"x-dead-letter-exchange": dlx}
    await declare_queue(rabbit.amqp_url, queue_name, arguments=arguments)
    await publish_raw(rabbit.amqp_url, queue_name, b"z" * (100 * 1024),
                      content_type="text/plain", message_id="big-1")
    small = await publish_json(rabbit.amqp_url, queue_name, [{"after": "big"}])
    bridge = start_bridge(tmp_path, bridges, emulator, rabbit.address, queue_name, **overrides)
    assert await emulator.wait_total(1, timeout_s=30) == 1
    await wait_until(lambda: rabbit.queue_counts(queue_name) == (0, 0), 30, "an empty queue")
    await asyncio.sleep(1)
    assert rabbit.queue_counts(queue_name) == (0, 0)  # never requeued in a loop
    assert {e["id"] for e in await emulator.events()} == set(small)
    logs = json_lines(bridge)
    if path != "no_dlx":
        dead = await drain_queue(rabbit.amqp_url, dlq)
        assert [m.message_id for m in dead] == ["big-1"]
        if path == "bridge_dlx":
            assert dead[0].headers["x-eg-bridge-reason"] == "event_too_large"
            assert "x-eg-bridge-error-code" in dead[0].headers
            assert any(r["event"] == "message published to the dead-letter exchange"
                       for r in logs)
        else:
            assert dead[0].headers["x-death"][0]["reason"] == "rejected"
    if path != "bridge_dlx":
        warning = [r for r in logs if r["event"].startswith("dead-lettered by the queue's DLX")]
        assert len(warning) == 1
        assert warning[0]["level"] == "warning"
        assert warning[0]["event"] == ("dead-lettered by the queue's DLX if it has one, "
                                       "otherwise dropped by the broker")
    metrics = await bridge.metrics_text()
    assert 'eg_bridge_dead_lettered_total{reason="event_too_large"} 1.0' in metrics


# -- shutdown ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_shutdown_with_50_in_flight(
    how: str, rabbit: RabbitServer, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    ids = await publish_json(rabbit.amqp_url, queue_name, [{"n": i} for i in range(50)])
    await emulator.fault(path="events", latency_ms=500)
    bridge = start_bridge(tmp_path, bridges, emulator, rabbit.address, queue_name,
                          source={"connection": {"prefetch": 50}},
                          forwarding={"max_in_flight_batches": 2})
    await bridge.wait_ready()
    await wait_until(lambda: rabbit.queue_counts(queue_name)[1] == 50, 10, "50 in flight")
    if how == "sigterm":
        bridge.terminate()
        assert await bridge.wait_exit(20) == 0
        delivered = {e["id"] for e in await emulator.events()}
        ready, unacked = rabbit.queue_counts(queue_name)
        assert unacked == 0
        assert len(delivered) == 40  # the two batches in flight finished and were acked
        assert len(delivered) + ready == 50  # the rest went back, nothing twice
        events = [r["event"] for r in json_lines(bridge)]
        assert events.index("consumer cancelled") < events.index("bridge stopped")
    else:
        bridge.proc.kill()  # type: ignore[union-attr]
        await bridge.wait_exit(10)
        await wait_until(lambda: rabbit.queue_counts(queue_name)[1] == 0, 10, "no unacked")
    await emulator.clear_faults()
    start_bridge(tmp_path, bridges, emulator, rabbit.address, queue_name)
    await wait_until(lambda: rabbit.queue_counts(queue_name) == (0, 0), 30, "an empty queue")
    assert {e["id"] for e in await emulator.events()} == set(ids)
