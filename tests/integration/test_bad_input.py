"""Bad input (issue 5, cases 9-14): odd headers, content types and bodies, an oversized
message and a truncated JSON body, each sent through a real RabbitMQ node to ``eg-bridge run``
as a real process and checked in a real emulator. Nothing crashes, nothing is retried forever,
nothing waits behind a bad message.

The emulator runs in process with a middleware of the test's own in front, which records the
size (and, up to 256 KiB, the body) of every PutEvents request the bridge sent. Each test
queue has its own DLX (``<queue>.dlx`` -> ``<queue>.dead``), so a ``basic.nack(requeue=False)``
can be counted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.emulator.app import EmulatorConfig, create_app
from tests.support.amqp import (
    RawLongString,
    declare_dead_lettered_queue,
    declare_queue,
    get_all,
    publish_raw,
)
from tests.support.bridge import CHANNEL_ID, BridgeProcess, Emulator, bridge_config, status_port
from tests.support.rabbit import RabbitServer

pytestmark = pytest.mark.integration

MAX_REQUEST_BYTES = 256 * 1024
CORE = {"specversion", "id", "source", "type", "datacontenttype", "subject", "time",
        "dataschema", "data"}


@dataclass
class Sink:
    """The emulator plus what the test saw on the wire: each PutEvents request's body size,
    and the bodies themselves up to EG's request limit."""

    api: Emulator
    request_sizes: list[int] = field(default_factory=list)
    request_bodies: list[bytes] = field(default_factory=list)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    sizes: list[int] = []
    bodies: list[bytes] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST" and "/channels/" in request.path:
            length = request.content_length
            if length is None or length <= MAX_REQUEST_BYTES:
                body = await request.read()  # cached: the handler reads it again
                bodies.append(body)
                length = len(body)
            sizes.append(length)
        return await handler(request)  # type: ignore[no-any-return]

    app = create_app(EmulatorConfig(port=0, channels={"test": CHANNEL_ID}))
    app.middlewares.insert(0, record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        yield Sink(Emulator(f"http://127.0.0.1:{port}"), sizes, bodies)
    finally:
        await runner.cleanup()



@pytest.fixture
def source_name() -> str:
    return f"bad-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def dead_queue(rabbit: RabbitServer, queue_name: str) -> str:
    """Declare the test queue with its own DLX; returns the dead-letter queue's name."""
    return await declare_dead_lettered_queue(rabbit.amqp_url, queue_name)


def start_bridge(tmp_path: Path, bridges: list[BridgeProcess], sink: Sink, rabbit: RabbitServer,
                 queue: str, name: str, **overrides: Any) -> BridgeProcess:
    cfg = bridge_config(emulator_url=sink.api.url, rabbit_address=rabbit.address, queue=queue,
                        source_name=name, status_port=status_port(), overrides=overrides)
    bridge = BridgeProcess(tmp_path, cfg)
    bridges.append(bridge)
    bridge.start()
    return bridge


async def settled(rabbit: RabbitServer, queue: str, timeout_s: float = 20) -> None:
    """Wait until ``queue`` holds nothing, ready or unacked."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if rabbit.queue_counts(queue) == (0, 0):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"queue {queue} not settled: {rabbit.queue_counts(queue)}")


async def events_by_id(sink: Sink, source: str, n: int, timeout_s: float = 20) -> dict[str, Any]:
    """Wait for ``n`` events of ``source``; return them by id (each id exactly once)."""
    assert await sink.api.wait_total(n, source, timeout_s=timeout_s) >= n
    events = await sink.api.events(source)
    by_id = {e["id"]: e for e in events}
    assert len(by_id) == len(events) == n, [e["id"] for e in events]
    return by_id


def extensions(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in CORE}


def log_records(bridge: BridgeProcess) -> list[dict[str, Any]]:
    records = []
    for line in bridge.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


async def assert_alive_and_ready(bridge: BridgeProcess) -> None:
    """Never a crash: the process still runs and /readyz answers 200."""
    assert bridge.proc is not None
    assert bridge.proc.poll() is None, bridge.log()[-3000:]
    async with aiohttp.ClientSession() as http, http.get(bridge.status_url + "/readyz") as resp:
        assert resp.status == 200, await resp.text()




def dead_lettered_total(values: dict[str, float]) -> float:
    return sum(v for k, v in values.items() if k.startswith("eg_bridge_dead_lettered_total"))


def vm_hwm_bytes(pid: int) -> int:
    """Peak resident set size of ``pid`` (``VmHWM``), in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB$", text, re.MULTILINE)
    assert match, text
    return int(match.group(1)) * 1024


# --- case 9: header values of every AMQP type --------------------------------------------------


async def test_binary_and_non_utf8_header_values_become_base64_never_a_crash(
    rabbit: RabbitServer, sink: Sink, queue_name: str, dead_queue: str, source_name: str,
    tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    headers: dict[str, Any] = {
        "sig": bytearray(b"\x00\xffabc"),  # AMQP byte array (x)
        "sig-bytes": b"\x00\xffabc",
        "latin": RawLongString(b"caf\xe9"),  # long string (S), not UTF-8
        "junk": RawLongString(b"\xff\xfe\x00\x80"),
        "utf8": RawLongString("数据✓".encode()),
        "table": {"k": "v", "raw": RawLongString(b"\xff"), "n": 1},
        "array": [1, "a", bytearray(b"\x01\x02"), RawLongString(b"\xe9")],
        "price": Decimal("12.340"),
        "at": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        "big": 2**40,
        "small": -7,
        "flag": True,
        "ratio": 1.5,
        "nothing": None,
    }
    await publish_raw(rabbit.amqp_url, queue_name, b'{"n":1}', content_type="application/json",
                      message_id="hdr-1", headers=headers)
    # Without a message id the same headers go into the hashed id.
    await publish_raw(rabbit.amqp_url, queue_name, b'{"n":2}', content_type="application/json",
                      headers=headers)
    bridge = start_bridge(tmp_path, bridges, sink, rabbit, queue_name, source_name)
    await bridge.wait_ready()
    events = await events_by_id(sink, source_name, 2)
    await settled(rabbit, queue_name)

    assert extensions(events["hdr-1"]) == {
        "sig": "AP9hYmM=",
        "sigbytes": "AP9hYmM=",
        "latin": base64.b64encode(b"caf\xe9").decode(),
        "junk": base64.b64encode(b"\xff\xfe\x00\x80").decode(),
        "utf8": "数据✓",
        "table": '{"k":"v","n":1,"raw":"/w=="}',
        "array": '[1,"a","AQI=","6Q=="]',
        "price": "12.340",
        "at": "2024-05-06T07:08:09Z",
        "big": "1099511627776",
        "small": -7,
        "flag": True,
        "ratio": "1.5",
        "nothing": "null",
        "contenttype": "application/json",
    }
    assert events["hdr-1"]["data"] == {"n": 1}
    (hashed,) = set(events) - {"hdr-1"}
    assert re.fullmatch(r"[0-9a-f]{64}", hashed)
    assert extensions(events[hashed]) == extensions(events["hdr-1"])
    assert rabbit.queue_counts(dead_queue) == (0, 0)
    await assert_alive_and_ready(bridge)


# --- case 10: header names ---------------------------------------------------------------------


async def test_header_names_reduce_collide_by_sort_order_and_never_replace_attributes(
    rabbit: RabbitServer, sink: Sink, queue_name: str, dead_queue: str, source_name: str,
    tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    # Through a hop queue whose messages expire at once: the message can only reach the test
    # queue dead-lettered, so it carries RabbitMQ's own x-death and x-first-death-* (and
    # x-last-death-* on newer brokers) next to the producer's x-delay, x-received-from and
    # x-delivery-count.
    hop = f"{queue_name}.hop"
    await declare_queue(rabbit.amqp_url, hop, arguments={
        "x-message-ttl": 0, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue_name})
    await publish_raw(rabbit.amqp_url, hop, b'{"n":1}', content_type="application/json",
                      message_id="names-1", headers={
                          "X-Correlation-ID": "corr-42",
                          "tenant_id": "from-tenant_id",
                          "TENANTID": "from-TENANTID",
                          "type": "evil.type",
                          "id": "evil-id",
                          "Source": "evil-source",
                          "data": "evil-data",
                          "---": "no name left",
                          "x-delay": 500,
                          "x-received-from": [{"uri": "amqp://upstream"}],
                          "x-delivery-count": 2,
                      })
    bridge = start_bridge(tmp_path, bridges, sink, rabbit, queue_name, source_name,
                          logging={"format": "json", "level": "debug"})
    await bridge.wait_ready()
    events = await events_by_id(sink, source_name, 1)
    await settled(rabbit, queue_name)

    event = events["names-1"]
    assert event["type"] == "com.example.test"  # forwarding.event_type, not the header
    assert event["source"] == source_name
    assert event["data"] == {"n": 1}
    assert extensions(event) == {
        "xcorrelationid": "corr-42",
        "tenantid": "from-TENANTID",
        "contenttype": "application/json",
    }
    collisions = [r for r in log_records(bridge) if r.get("event") == "extension_collision"]
    assert collisions
    assert all(r["level"] == "debug" for r in collisions)
    assert {(r["extension"], r["kept"], r["dropped"]) for r in collisions} == {
        ("tenantid", "TENANTID", "tenant_id")}
    assert rabbit.queue_counts(dead_queue) == (0, 0)
    await assert_alive_and_ready(bridge)


# --- case 11: JSON content types ---------------------------------------------------------------


async def test_json_content_types_parse_regardless_of_case_params_and_suffix(
    rabbit: RabbitServer, sink: Sink, queue_name: str, dead_queue: str, source_name: str,
    tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    content_types = {
        "ct-params": "application/json; charset=utf-8",
        "ct-upper": "Application/JSON",
        "ct-suffix": "application/vnd.acme+json",
    }
    for message_id, content_type in content_types.items():
        await publish_raw(rabbit.amqp_url, queue_name, b'{"stuff":"value"}',
                          content_type=content_type, message_id=message_id)
    await publish_raw(rabbit.amqp_url, queue_name, b'{"a":1}', content_type="text/plain",
                      message_id="ct-text")
    bridge = start_bridge(tmp_path, bridges, sink, rabbit, queue_name, source_name)
    await bridge.wait_ready()
    events = await events_by_id(sink, source_name, 4)
    await settled(rabbit, queue_name)

    for message_id, content_type in content_types.items():
        assert events[message_id]["data"] == {"stuff": "value"}, message_id
        assert events[message_id]["contenttype"] == content_type
        assert events[message_id]["datacontenttype"] == "application/json"
    assert events["ct-text"]["data"] == {"text": '{"a":1}'}
    assert events["ct-text"]["contenttype"] == "text/plain"
    assert rabbit.queue_counts(dead_queue) == (0, 0)


# --- case 12: bodies ---------------------------------------------------------------------------


async def test_bodies_map_exactly_and_an_empty_body_is_acked_without_blocking_prefetch_1(
    rabbit: RabbitServer, sink: Sink, queue_name: str, dead_queue: str, source_name: str,
    tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    unicode_body = '{"d":"数据✓😀"}'.encode()
    # The empty body goes first: with prefetch 1 nothing behind it flows unless it is acked.
    await publish_raw(rabbit.amqp_url, queue_name, b"", message_id="empty")
    await publish_raw(rabbit.amqp_url, queue_name, b"", content_type="application/json",
                      message_id="empty-json")
    await publish_raw(rabbit.amqp_url, queue_name, b"\x00\xff\xfe\x10",
                      content_type="application/octet-stream", message_id="octets")
    await publish_raw(rabbit.amqp_url, queue_name, unicode_body, content_type="application/json",
                      message_id="unicode")
    await publish_raw(rabbit.amqp_url, queue_name, unicode_body, message_id="unicode-sniffed")
    await publish_raw(rabbit.amqp_url, queue_name, b"caf\xe9",
                      content_type="text/plain; charset=iso-8859-1", message_id="latin1")
    # Round-trips exactly, beyond orjson's defaults too: integers over 64 bits, a UTF-8 BOM.
    big_ints = b'{"big":123456789012345678901234567890,"neg":-9223372036854775809}'
    await publish_raw(rabbit.amqp_url, queue_name, big_ints, content_type="application/json",
                      message_id="big-ints")
    await publish_raw(rabbit.amqp_url, queue_name, b'\xef\xbb\xbf{"bom":true}',
                      content_type="application/json", message_id="bom")
    bridge = start_bridge(tmp_path, bridges, sink, rabbit, queue_name, source_name,
                          source={"connection": {"prefetch": 1}})
    await bridge.wait_ready()
    events = await events_by_id(sink, source_name, 8)
    await settled(rabbit, queue_name)

    assert "data" not in events["empty"]
    assert extensions(events["empty"]) == {}
    assert "data" not in events["empty-json"]
    assert extensions(events["empty-json"]) == {"contenttype": "application/json"}
    assert events["octets"]["data"] == {"base64": "AP/+EA=="}
    assert events["octets"]["contenttype"] == "application/octet-stream"
    assert events["unicode"]["data"] == {"d": "数据✓😀"}
    assert events["unicode-sniffed"]["data"] == {"d": "数据✓😀"}
    assert "contenttype" not in events["unicode-sniffed"]
    assert events["latin1"]["data"] == {"text": "café"}
    assert events["latin1"]["contenttype"] == "text/plain; charset=iso-8859-1"
    wire = b"".join(sink.request_bodies)
    assert '"data":{"d":"数据✓😀"}'.encode() in wire  # UTF-8 as sent, no escapes
    assert b'"data":' + big_ints in wire  # the emulator itself reads them as floats
    assert events["bom"]["data"] == {"bom": True}
    assert all(e["datacontenttype"] == "application/json" for e in events.values())
    # Each message was delivered once and acked: no redelivery, nothing dead-lettered.
    values = await bridge.metrics()
    assert values["eg_bridge_redeliveries_total"] == 0
    assert dead_lettered_total(values) == 0
    assert rabbit.queue_counts(dead_queue) == (0, 0)


# --- case 13: a message far over every limit ---------------------------------------------------

BIG_BYTES = 15 * 1024 * 1024
BIG_MARKER = b"BIGBODY-7f3a"


def big_body() -> bytes:
    """15 MiB of a JSON object with one long string: parses, and is far over 64 KiB."""
    filler = (BIG_MARKER * (BIG_BYTES // len(BIG_MARKER) + 1))[: BIG_BYTES - 11]
    return b'{"blob":"' + filler + b'"}'


async def queue_big_then_small(rabbit: RabbitServer, queue: str) -> list[str]:
    """Queue the 15 MiB message and 10 small ones behind it; returns the small ids."""
    body = big_body()
    assert len(body) == BIG_BYTES
    await publish_raw(rabbit.amqp_url, queue, body, content_type="application/json",
                      message_id="big-1", delivery_mode=2)
    small = [f"small-{i}" for i in range(10)]
    for message_id in small:
        await publish_raw(rabbit.amqp_url, queue, b'{"small":true}',
                          content_type="application/json", message_id=message_id)
    return small


async def test_oversized_message_is_dead_lettered_once_without_holding_back_others(
    rabbit: RabbitServer, sink: Sink, queue_name: str, dead_queue: str, source_name: str,
    tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    # Queued before the bridge starts: the small ones sit behind the big one in one prefetch
    # window (200), so anything that waits for the big one holds them back.
    small = await queue_big_then_small(rabbit, queue_name)
    bridge = start_bridge(tmp_path, bridges, sink, rabbit, queue_name, source_name)
    await bridge.wait_ready()
    assert bridge.proc is not None
    ready = time.monotonic()
    assert await sink.api.wait_total(10, source_name, timeout_s=20) == 10, bridge.log()[-3000:]
    took = time.monotonic() - ready
    assert took < 5, f"small messages held back {took:.1f}s"
    await settled(rabbit, queue_name)
    await asyncio.sleep(1)  # a second dead-lettering or a retry would show up now

    events = await events_by_id(sink, source_name, 10)
    assert set(events) == set(small)
    assert sink.request_sizes, "no PutEvents request recorded"
    assert max(sink.request_sizes) <= MAX_REQUEST_BYTES, sorted(sink.request_sizes)[-3:]
    stats = await sink.api.stats()
    assert stats["events_failed"] == 0
    assert stats["put_events_requests"] == len(sink.request_sizes)

    dead = await get_all(rabbit.amqp_url, dead_queue)
    assert [m.message_id for m in dead] == ["big-1"]
    assert len(dead[0].body) == BIG_BYTES
    values = await bridge.metrics()
    assert values['eg_bridge_dead_lettered_total{reason="event_too_large"}'] == 1
    assert dead_lettered_total(values) == 1
    assert values["eg_bridge_redeliveries_total"] == 0
    dead_logs = [r for r in log_records(bridge) if r.get("event") == "message dead-lettered"]
    assert len(dead_logs) == 1
    assert dead_logs[0]["reason"] == "event_too_large"
    assert BIG_MARKER.decode() not in bridge.log()

    peak = vm_hwm_bytes(bridge.proc.pid)
    assert peak < 150 * 1024 * 1024, f"bridge peak RSS {peak / 2**20:.0f} MiB"
    await assert_alive_and_ready(bridge)


async def test_oversized_message_dead_letter_log_names_its_size_and_id_not_its_body(
    rabbit: RabbitServer, sink: Sink, queue_name: str, dead_queue: str, source_name: str,
    tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    await queue_big_then_small(rabbit, queue_name)
    bridge = start_bridge(tmp_path, bridges, sink, rabbit, queue_name, source_name)
    await bridge.wait_ready()
    assert await sink.api.wait_total(10, source_name, timeout_s=20) == 10
    await settled(rabbit, queue_name)
    assert BIG_MARKER.decode() not in bridge.log()
    dead_logs = [r for r in log_records(bridge) if "dead-letter" in str(r.get("event"))]
    assert dead_logs
    assert any(
        "big-1" in text and any(int(n) >= BIG_BYTES for n in re.findall(r"\d{8,}", text))
        for text in map(json.dumps, dead_logs)
    ), dead_logs


# --- case 14: a JSON content type whose body does not parse ------------------------------------


async def test_truncated_json_is_forwarded_as_text_once_and_not_retried(
    rabbit: RabbitServer, sink: Sink, queue_name: str, dead_queue: str, source_name: str,
    tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    await publish_raw(rabbit.amqp_url, queue_name, b'{"a":', content_type="application/json",
                      message_id="truncated")
    # The same kind: JSON content type, a body that is not JSON and not UTF-8 either.
    await publish_raw(rabbit.amqp_url, queue_name, b'{"a":"\xff', content_type="application/json",
                      message_id="truncated-binary")
    bridge = start_bridge(tmp_path, bridges, sink, rabbit, queue_name, source_name)
    await bridge.wait_ready()
    events = await events_by_id(sink, source_name, 2)
    await settled(rabbit, queue_name)
    await asyncio.sleep(1)  # a retry would show up now

    assert events["truncated"]["data"] == {"text": '{"a":'}
    assert events["truncated"]["contenttype"] == "application/json"
    assert events["truncated-binary"]["data"] == {
        "base64": base64.b64encode(b'{"a":"\xff').decode()}
    assert await sink.api.total(source_name) == 2
    stats = await sink.api.stats()
    assert stats["events_failed"] == 0
    assert stats["events_accepted"] == 2
    wire = b"".join(sink.request_bodies)
    assert wire.count(b'"id":"truncated"') == wire.count(b'"id":"truncated-binary"') == 1
    values = await bridge.metrics()
    assert values["eg_bridge_redeliveries_total"] == 0
    assert dead_lettered_total(values) == 0
    assert rabbit.queue_counts(dead_queue) == (0, 0)
    await assert_alive_and_ready(bridge)
