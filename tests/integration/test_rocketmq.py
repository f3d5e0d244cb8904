"""RocketMQ end to end (issue 6): the real rocketmq-client-python + librocketmq (producer in a
subprocess, consumer inside ``eg-bridge run``) against the protocol-level test broker of
tests/support/rocketmq, and the emulator as the EG endpoint. What the test broker does not
prove is listed in its package docstring."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.bridge import BridgeProcess, Emulator, bridge_config, status_port
from tests.support.rocketmq import DLQ_PREFIX, RETRY_PREFIX, TestBroker, produce, rocketmq_source

pytestmark = pytest.mark.integration
TOPIC = "orders"
GROUP = "eg-bridge-orders"
ACL = ("ak-test-7f3a", "sk-test-secret-91c2")



@pytest.fixture
async def broker() -> AsyncIterator[TestBroker]:
    server = TestBroker()
    server.store.create_topic(TOPIC)
    server.store.reset_group(GROUP, TOPIC)  # the operator's reset before the first deploy
    await server.start()
    try:
        yield server
    finally:
        await server.close()



def start_bridge(tmp_path: Path, bridges: list[BridgeProcess], emulator: Emulator,
                 broker: TestBroker, *, acl: tuple[str, str] | None = None,
                 properties: tuple[str, ...] = (), threads: int = 4,
                 dead_letter_topic: str = "", **overrides: Any) -> BridgeProcess:
    """``eg-bridge run`` consuming TOPIC as GROUP; the native client logs to tmp_path."""
    cfg = bridge_config(emulator_url=emulator.url, rabbit_address="127.0.0.1:1", queue="-",
                        source_name=f"rmq-{uuid.uuid4().hex[:8]}", status_port=status_port(),
                        overrides=overrides)
    cfg["source"].update(rocketmq_source(broker, topic=TOPIC, group=GROUP, acl=acl,
                                         threads=threads, properties=properties,
                                         dead_letter_topic=dead_letter_topic))
    bridge = BridgeProcess(tmp_path, cfg,
                           env={"ROCKETMQ_CLIENT_LOG_DIR": str(tmp_path / "rocketmq-logs")})
    bridges.append(bridge)
    bridge.start()
    return bridge


def json_lines(bridge: BridgeProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in bridge.log().splitlines() if line.startswith("{")]


async def metric(bridge: BridgeProcess, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(bridge.status_url + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


async def wait_until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def committed(broker: TestBroker) -> int:
    """Messages of TOPIC the group committed (sum of its queue offsets)."""
    return sum(off for (g, t, _), off in broker.store.offsets.items() if g == GROUP and t == TOPIC)


def texts(n: int, prefix: str) -> list[dict[str, Any]]:
    return [{"body": f"{prefix} {i}", "tags": "text", "keys": f"k-{prefix}-{i}"}
            for i in range(n)]


async def test_2000_messages_from_the_real_producer_become_2000_events(
    broker: TestBroker, emulator: Emulator, tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    bridge = start_bridge(tmp_path, bridges, emulator, broker, properties=("color", "missing"))
    await bridge.wait_ready()
    before = int(time.time() * 1000)
    messages = [{"body": f"plain text {i} – ünïcode", "tags": "text", "keys": f"order-{i}",
                 "properties": {"color": "red"}} for i in range(1000)]
    messages += [{"body": json.dumps({"n": i, "items": [1, 2, {"x": None}]}), "tags": "json"}
                 for i in range(1000)]
    ids = await produce(broker, TOPIC, messages, workdir=tmp_path)
    assert len(set(ids)) == 2000
    assert await emulator.wait_total(2000, timeout_s=90) == 2000
    events = await emulator.events()
    by_id = {e["id"]: e for e in events}
    assert set(by_id) == set(ids)  # ids equal the producer's message ids, each exactly once
    for i, msg_id in enumerate(ids[:1000]):
        event = by_id[msg_id]
        assert event["data"] == {"text": f"plain text {i} – ünïcode"}
        assert event["subject"] == "text"
        assert event["keys"] == f"order-{i}"
        assert event["color"] == "red"
        assert "missing" not in event
        born = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp() * 1000
        assert before - 1000 <= born <= time.time() * 1000
    for i, msg_id in enumerate(ids[1000:]):
        event = by_id[msg_id]
        assert event["data"] == {"n": i, "items": [1, 2, {"x": None}]}
        assert event["subject"] == "json"
        assert "keys" not in event
    status = await bridge.get_json("/status")
    assert status["consumer"]["type"] == "ROCKETMQ"
    assert status["consumer"]["topic"] == TOPIC
    assert status["consumer"]["last_message_at"] is not None
    assert status["counters"]["events_published"] == 2000
    bridge.terminate()
    assert await bridge.wait_exit(20) == 0
    assert committed(broker) == 2000  # final offsets committed at shutdown
    assert broker.store.send_backs == []


async def test_eg_down_30s_messages_wait_in_their_threads_and_none_reach_the_dlq(
    broker: TestBroker, emulator: Emulator, tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    bridge = start_bridge(tmp_path, bridges, emulator, broker)
    await bridge.wait_ready()
    fault = await emulator.fault(path="events", status=503)
    ids = await produce(broker, TOPIC, texts(300, "outage"), workdir=tmp_path)
    await asyncio.sleep(30)
    assert await emulator.total() == 0
    status = await bridge.get_json("/status")
    assert status["state"] == "DEGRADED"
    assert status["ready"] is True
    assert status["consumer"]["in_flight"] == 4  # one per consume thread, each still waiting
    assert broker.store.send_backs == []  # no RECONSUME_LATER: nothing walks toward %DLQ%
    async with aiohttp.ClientSession() as http:
        await http.delete(f"{emulator.url}/emulator/faults/{fault}")
    assert await emulator.wait_total(300, timeout_s=60) == 300
    assert {e["id"] for e in await emulator.events()} == set(ids)
    assert broker.store.send_backs == []
    assert broker.store.messages(DLQ_PREFIX + GROUP) == []
    assert broker.store.messages(RETRY_PREFIX + GROUP) == []
    await wait_until(lambda: committed(broker) == 300, 15, "offsets committed")


async def test_sigterm_during_an_outage_gives_messages_back_and_they_return_redelivered(
    broker: TestBroker, emulator: Emulator, tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    bridge = start_bridge(tmp_path, bridges, emulator, broker)
    await bridge.wait_ready()
    await emulator.fault(path="events", status=503)
    ids = await produce(broker, TOPIC, texts(40, "held"), workdir=tmp_path)

    async def holding() -> bool:
        return (await bridge.get_json("/status"))["consumer"]["in_flight"] == 4

    await wait_until(holding, 20, "four held messages")
    started = time.monotonic()
    bridge.terminate()
    assert await bridge.wait_exit(30) == 0
    assert time.monotonic() - started < 15
    assert "Segmentation fault" not in bridge.log()
    backs = broker.store.send_backs
    assert len(backs) >= 4  # the held ones came back RECONSUME_LATER
    assert all(b.group == GROUP and b.reconsume_times == 1 and not b.to_dlq for b in backs)
    sent_back = {b.msg_id for b in backs}
    assert sent_back <= set(ids)

    await emulator.clear_faults()
    again = start_bridge(tmp_path, bridges, emulator, broker)
    await again.wait_ready()
    assert await emulator.wait_total(40, timeout_s=60) >= 40
    assert {e["id"] for e in await emulator.events()} == set(ids)
    redelivered = {line["message_id"]: line["reconsume_times"] for line in json_lines(again)
                   if line.get("event") == "message redelivered by the broker"}
    assert set(redelivered) == sent_back
    assert all(times >= 1 for times in redelivered.values())
    assert await metric(again, "eg_bridge_redeliveries_total") == len(sent_back)
    assert broker.store.messages(DLQ_PREFIX + GROUP) == []


async def test_acl_right_keys_consume_wrong_secret_consumes_nothing_and_names_causes(
    broker: TestBroker, emulator: Emulator, tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    broker.acl = {ACL[0]: ACL[1]}
    wrong = start_bridge(tmp_path, bridges, emulator, broker, acl=(ACL[0], "wrong-secret-x9"))
    ids = await produce(broker, TOPIC, texts(10, "acl"), acl=ACL, workdir=tmp_path)
    await wait_until(lambda: "likely causes" in wrong.log(), 30, "the start-up error")
    await asyncio.sleep(2)
    assert await emulator.total() == 0
    status = await wrong.get_json("/status")
    assert status["ready"] is False
    assert "wrong ACL keys" in status["last_error"]["message"]
    errors = [line for line in json_lines(wrong) if line.get("event") == "start consumer failed"]
    assert errors
    assert "a wrong detail.namesrv_address, a topic that does not exist" in errors[0]["error"]
    assert "Check signature failed" in errors[0]["error"]
    for secret in (ACL[0], ACL[1], "wrong-secret-x9"):
        assert secret not in wrong.log()
        assert secret not in json.dumps(status)
    wrong.terminate()
    assert await wrong.wait_exit(20) == 0
    rejected = broker.acl_rejections
    assert rejected > 0

    right = start_bridge(tmp_path, bridges, emulator, broker, acl=ACL)
    await right.wait_ready()
    assert await emulator.wait_total(10, timeout_s=30) == 10
    assert {e["id"] for e in await emulator.events()} == set(ids)
    assert broker.acl_rejections == rejected  # every request of the real client was signed right
    native_logs = list((tmp_path / "rocketmq-logs").iterdir())
    assert native_logs
    for path in native_logs:
        assert ACL[1] not in path.read_text(errors="replace")


async def readyz(bridge: BridgeProcess) -> int:
    async with aiohttp.ClientSession() as http, http.get(bridge.status_url + "/readyz") as r:
        return r.status


async def test_broker_stopped_readiness_503_then_back_and_nothing_is_lost(
    broker: TestBroker, emulator: Emulator, tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    """The client reports no connection state: the bridge's own probe (route at the name
    server, offset at the broker, every 5 s) makes it not ready while the broker is down."""
    await emulator.fault(path="events", latency_ms=100)  # some in flight, some still queued
    bridge = start_bridge(tmp_path, bridges, emulator, broker)
    await bridge.wait_ready()
    assert await metric(bridge, "eg_bridge_consumer_connected") == 1
    before = await produce(broker, TOPIC, texts(100, "before"), workdir=tmp_path)
    await wait_until(lambda: _at_least(emulator, 10), 30, "the first events")
    await broker.stop()
    stopped = time.monotonic()
    assert await emulator.total() < 100  # the rest is in the bridge or the stopped broker

    async def not_ready() -> bool:
        return await readyz(bridge) == 503

    await wait_until(not_ready, 10, "/readyz 503 with the broker stopped")
    status = await bridge.get_json("/status")
    assert (status["state"], status["ready"]) == ("ERROR", False)
    assert status["reason"] == "broker consumer not attached"
    assert status["consumer"]["connected"] is False
    error = status["last_error"]
    assert (error["kind"], error["error_code"]) == ("broker", "")
    assert "name server or broker" in error["message"]
    assert broker.address in error["message"]
    assert await metric(bridge, "eg_bridge_consumer_connected") == 0
    await asyncio.sleep(max(0.0, 12 - (time.monotonic() - stopped)))  # stays down: one WARNING
    assert await readyz(bridge) == 503
    [detached] = events_named(bridge, "consumer detached: name server or broker check failed")
    assert detached["level"] == "warning"
    assert broker.address in detached["error"]

    await broker.start()
    after = await produce(broker, TOPIC, texts(50, "after"), workdir=tmp_path)
    got: set[str] = set()

    async def everything() -> bool:
        got.update(e["id"] for e in await emulator.events())
        return got >= set(before + after)

    await wait_until(everything, 60, "every message after the broker restart")
    assert got == set(before + after)

    async def ready() -> bool:
        return await readyz(bridge) == 200

    await wait_until(ready, 10, "/readyz 200 after the broker restart")
    status = await bridge.get_json("/status")
    assert (status["state"], status["consumer"]["connected"]) == ("RUNNING", True)
    assert await metric(bridge, "eg_bridge_consumer_connected") == 1
    [again] = events_named(bridge, "consumer attached again")
    assert again["level"] == "info"
    assert len(events_named(bridge, "consumer detached: name server or broker check failed")) == 1


async def test_sigterm_during_flow_exits_0_commits_offsets_and_the_next_run_delivers_the_rest(
    broker: TestBroker, emulator: Emulator, tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    await emulator.fault(path="events", latency_ms=30)
    bridge = start_bridge(tmp_path, bridges, emulator, broker)
    await bridge.wait_ready()
    ids = await produce(broker, TOPIC, texts(1000, "flow"), workdir=tmp_path)
    await wait_until(lambda: _at_least(emulator, 200), 60, "200 events")
    started = time.monotonic()
    bridge.terminate()
    assert await bridge.wait_exit(30) == 0
    assert time.monotonic() - started < 15  # shutdown_grace_s is 10
    first = Counter(e["id"] for e in await emulator.events())
    assert max(first.values()) == 1
    assert committed(broker) >= len(first) - 20  # final offsets were committed at shutdown
    # A held callback's RECONSUME_LATER sends its whole pull batch back (client-cpp 2.1.0 hands
    # one batch of up to 32 messages to a consume thread): at most 4 threads x 32 messages.
    backs = broker.store.send_backs
    assert len(backs) <= 4 * 32
    assert all(b.reconsume_times == 1 and not b.to_dlq for b in backs)
    assert "Segmentation fault" not in bridge.log()

    await emulator.clear_faults()
    again = start_bridge(tmp_path, bridges, emulator, broker)
    await again.wait_ready()
    got: Counter[str] = Counter()

    async def everything() -> bool:
        got.clear()
        got.update(e["id"] for e in await emulator.events())
        return set(got) >= set(ids)

    await wait_until(everything, 60, "every message after the restart")
    assert set(got) == set(ids)
    assert sum(got.values()) - len(ids) <= len(backs) + 20  # replays only the sent-back batches


async def _at_least(emulator: Emulator, n: int) -> bool:
    return await emulator.total() >= n


def events_named(bridge: BridgeProcess, event: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(bridge) if line.get("event") == event]


async def test_a_rejected_message_in_a_backlog_goes_to_the_dlq_and_its_batch_mates_stay_put(
    broker: TestBroker, emulator: Emulator, tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    """The client hands a consume thread a whole pull batch (up to 32 messages of a queue);
    a RECONSUME_LATER would send all of it back. The bridge publishes the rejected message to
    %DLQ%<group> itself and acks it, so nothing else moves."""
    broker.acl = {ACL[0]: ACL[1]}
    broker.store.retry_delay_s = 0.2  # a retry, if any, would come back quickly
    broker.store.create_topic(DLQ_PREFIX + GROUP, 1)  # as after the group's first dead letter
    backlog = [{"body": f"backlog {i}", "tags": "text", "keys": f"k-{i}",
                "properties": {"color": "red", "size": "L"}} for i in range(200)]
    ids = await produce(broker, TOPIC, backlog, acl=ACL, workdir=tmp_path)  # before the bridge
    poison = ids[100]  # in the middle of the first pull batch of its queue
    await emulator.fault(path="events", event_ids=[poison], error_code="EG.00513000")
    bridge = start_bridge(tmp_path, bridges, emulator, broker, acl=ACL, properties=("color",))
    await bridge.wait_ready()
    assert await emulator.wait_total(199, timeout_s=60) == 199
    await wait_until(lambda: broker.store.messages(DLQ_PREFIX + GROUP), 30, "the dead letter")
    await wait_until(lambda: committed(broker) == 200, 15, "every offset committed")
    await asyncio.sleep(2)  # ten retry delays: nothing comes back
    delivered = Counter(e["id"] for e in await emulator.events())
    assert set(delivered) == set(ids) - {poison}
    assert max(delivered.values()) == 1
    assert broker.store.send_backs == []  # no RECONSUME_LATER at all
    assert broker.store.messages(RETRY_PREFIX + GROUP) == []
    [dead] = broker.store.messages(DLQ_PREFIX + GROUP)
    assert dead.plain_body() == b"backlog 100"
    assert (dead.tags, dead.properties["KEYS"]) == ("text", "k-100")
    assert dead.properties["color"] == "red"
    assert "size" not in dead.properties  # the bridge knows only connection.properties
    assert dead.properties["x-eg-bridge-reason"] == "eg_rejected"
    assert dead.properties["x-eg-bridge-error-code"] == "EG.00513000"
    assert dead.properties["ORIGIN_MESSAGE_ID"] == poison
    assert dead.reconsume_times == 0
    assert [x["message_id"] for x in events_named(bridge, "message dead-lettered")] == [poison]
    published = events_named(bridge, "message published to the dead-letter topic")
    assert [(x["message_id"], x["topic"]) for x in published] == [(poison, DLQ_PREFIX + GROUP)]
    assert published[0]["dead_letter_id"] == dead.msg_id
    assert events_named(bridge, "message redelivered by the broker") == []
    assert not [x for x in json_lines(bridge)
                if str(x.get("event", "")).startswith("dead-letter topic does not exist")]
    assert await metric(bridge, "eg_bridge_redeliveries_total") == 0
    assert broker.acl_rejections == 0  # the dead-letter producer signs with the same keys
    bridge.terminate()
    assert await bridge.wait_exit(20) == 0
    assert "Segmentation fault" not in bridge.log()


async def test_an_oversized_message_goes_to_the_configured_dead_letter_topic(
    broker: TestBroker, emulator: Emulator, tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    broker.store.create_topic("orders-rejected", 2)
    big = "x" * 70_000  # over EG's 64 KiB; both producers compress it (bodies over 4 KB)
    ids = await produce(broker, TOPIC, [*texts(20, "small"), {"body": big, "keys": "k-big"},
                                        *texts(20, "later")], workdir=tmp_path)
    bridge = start_bridge(tmp_path, bridges, emulator, broker, dead_letter_topic="orders-rejected")
    await bridge.wait_ready()
    assert await emulator.wait_total(40, timeout_s=60) == 40
    await wait_until(lambda: broker.store.messages("orders-rejected"), 30, "the dead letter")
    await wait_until(lambda: committed(broker) == 41, 15, "every offset committed")
    assert {e["id"] for e in await emulator.events()} == set(ids) - {ids[20]}
    [dead] = broker.store.messages("orders-rejected")
    assert dead.sys_flag & 1  # compressed by the bridge's producer
    assert dead.plain_body() == big.encode()
    assert dead.tags == ""
    assert dead.properties["KEYS"] == "k-big"
    assert dead.properties["x-eg-bridge-reason"] == "event_too_large"
    assert "x-eg-bridge-error-code" not in dead.properties  # EG never saw it: no code
    assert dead.properties["ORIGIN_MESSAGE_ID"] == ids[20]
    assert broker.store.send_backs == []
    assert broker.store.messages(DLQ_PREFIX + GROUP) == []
    assert events_named(bridge, "dead-letter producer started")[0]["topic"] == "orders-rejected"


async def test_without_a_dead_letter_topic_a_rejected_message_walks_the_retries_to_the_dlq(
    broker: TestBroker, emulator: Emulator, tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    """%DLQ%<group> exists only after the broker's first dead letter for the group; until
    then the bridge's send fails ("No route info") and the message takes the broker's own
    retry path. Afterwards the bridge publishes there itself."""
    broker.store.max_reconsume_times = 2  # the client asks 16; the retry cycle is the same
    broker.store.retry_delay_s = 0.2
    bridge = start_bridge(tmp_path, bridges, emulator, broker)
    await bridge.wait_ready()
    [warning] = [x for x in json_lines(bridge)
                 if str(x.get("event", "")).startswith("dead-letter topic does not exist")]
    assert (warning["level"], warning["topic"]) == ("warning", DLQ_PREFIX + GROUP)
    outage = await emulator.fault(path="events", status=503)  # hold it until the fault is set
    [poison] = await produce(broker, TOPIC, texts(1, "poison"), workdir=tmp_path)
    await emulator.fault(path="events", event_ids=[poison], error_code="EG.00513000")
    async with aiohttp.ClientSession() as http:
        await http.delete(f"{emulator.url}/emulator/faults/{outage}")
    await wait_until(lambda: broker.store.messages(DLQ_PREFIX + GROUP), 30, "a dead letter")
    [dead] = broker.store.messages(DLQ_PREFIX + GROUP)
    assert dead.msg_id == poison
    assert dead.reconsume_times == 3
    assert dead.properties["RETRY_TOPIC"] == TOPIC
    assert "x-eg-bridge-reason" not in dead.properties  # the broker's copy, not the bridge's
    assert [b.reconsume_times for b in broker.store.send_backs] == [1, 2, 3]
    assert await emulator.total() == 0
    rejected = events_named(bridge, "message dead-lettered")
    assert [line["message_id"] for line in rejected] == [poison] * 3
    assert all(line["error_code"] == "EG.00513000" for line in rejected)
    failed = events_named(bridge, "dead-letter publish failed, the message goes back through "
                                  "%RETRY%")
    assert [(x["message_id"], x["level"]) for x in failed] == [(poison, "error")] * 3
    assert all("No route info" in x["error"] for x in failed)
    good = await produce(broker, TOPIC, texts(20, "good"), workdir=tmp_path)
    assert await emulator.wait_total(20, timeout_s=30) == 20
    assert {e["id"] for e in await emulator.events()} == set(good)

    # The broker has created %DLQ%<group> now: the next rejected message goes there directly.
    outage = await emulator.fault(path="events", status=503)
    [second] = await produce(broker, TOPIC, texts(1, "second poison"), workdir=tmp_path)
    await emulator.fault(path="events", event_ids=[second], error_code="00533012")
    async with aiohttp.ClientSession() as http:
        await http.delete(f"{emulator.url}/emulator/faults/{outage}")
    await wait_until(lambda: len(broker.store.messages(DLQ_PREFIX + GROUP)) == 2, 30,
                     "the second dead letter")
    again = broker.store.messages(DLQ_PREFIX + GROUP)[1]
    assert again.properties["ORIGIN_MESSAGE_ID"] == second
    assert again.properties["x-eg-bridge-error-code"] == "00533012"
    assert again.reconsume_times == 0
    assert len(broker.store.send_backs) == 3  # no send-back for the second one
