"""PutEvents of the EG emulator and its inspection API, over real HTTP (eg-api.md §5,
design.md §9)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.emulator.context import STATE
from tests.unit.test_emulator import (
    CHANNEL_ID,
    OTHER_CHANNEL_ID,
    RFC3339_US,
    Api,
    P,
    assert_error,
    running,
)

EVENTS = f"{P}/channels/{CHANNEL_ID}/events"


def event(i: int | str, source: str = "orders", **extra: Any) -> dict[str, Any]:
    return {
        "id": str(i),
        "source": source,
        "specversion": "1.0",
        "type": "com.example.t",
        "datacontenttype": "application/json",
        "data": {"n": i},
        **extra,
    }


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running() as client:
        await client.source("orders")
        await client.source("billing", channel_id=OTHER_CHANNEL_ID)
        yield client


async def stored(api: Api, **params: str) -> Any:
    reply = await api.call("GET", "/emulator/events", params=params)
    assert reply.status == 200
    return reply.body


async def test_put_events_accepts_and_stores(api: Api) -> None:
    reply = await api.call("POST", EVENTS, {"events": [event(1), event(2, x_unknown="kept")]})
    assert reply.status == 200
    assert reply.body == {
        "failed_count": 0,
        "events": [
            {"event_id": "1", "error_code": None, "error_msg": None},
            {"event_id": "2", "error_code": None, "error_msg": None},
        ],
    }
    body = await stored(api)
    assert body["total"] == 2
    assert [r["event"] for r in body["events"]] == [event(1), event(2, x_unknown="kept")]
    assert all(r["channel_id"] == CHANNEL_ID for r in body["events"])
    assert all(RFC3339_US.match(r["received_at"]) for r in body["events"])


async def test_same_event_twice_is_stored_twice(api: Api) -> None:
    for _ in range(2):
        assert (await api.call("POST", EVENTS, {"events": [event("same")]})).status == 200
    assert (await stored(api))["total"] == 2


async def test_per_event_errors_fail_only_those_events(api: Api) -> None:
    big = event("big", data={"blob": "x" * 66_000})
    exact = event("fits")
    exact["data"] = {"b": ""}
    exact["data"]["b"] = "y" * (65536 - len(orjson.dumps(exact)))
    assert len(orjson.dumps(exact)) == 65536
    no_type = event("no-type")
    del no_type["type"]
    batch: list[Any] = [
        event("ok-1"),
        big,
        no_type,
        event("bad-data", data=[1, 2]),
        event(7),
        exact,
        "not-an-object",
        event("b64", data_base64="AAA="),
    ]
    batch[4]["id"] = 7  # a number, not a string
    reply = await api.call("POST", EVENTS, {"events": batch})
    assert reply.status == 200
    codes = [(e["event_id"], e["error_code"]) for e in reply.body["events"]]
    assert codes == [
        ("ok-1", None),
        ("big", "EG.00533012"),
        ("no-type", "EG.00513000"),
        ("bad-data", "EG.00513000"),
        (None, "EG.00513000"),
        ("fits", None),
        (None, "EG.00513000"),
        ("b64", "EG.00513000"),
    ]
    assert reply.body["failed_count"] == 6
    msgs = [e["error_msg"] for e in reply.body["events"]]
    assert "type" in msgs[2]
    assert "data" in msgs[3]
    assert "id" in msgs[4]
    assert "data_base64" in msgs[7]
    assert [r["event"]["id"] for r in (await stored(api))["events"]] == ["ok-1", "fits"]


@pytest.mark.parametrize("body", [{}, {"events": []}, {"events": {"id": 1}}, [event(1)]])
async def test_events_must_be_a_non_empty_list(api: Api, body: Any) -> None:
    reply = await api.call("POST", EVENTS, body)
    assert_error(reply, 400, "EG.00513000")
    assert "events" in reply.body["error_msg"]


async def test_request_limits(api: Api) -> None:
    assert (await api.call("POST", EVENTS, {"events": [event(i) for i in range(20)]})).status == 200
    assert_error(
        await api.call("POST", EVENTS, {"events": [event(i) for i in range(21)]}),
        400,
        "EG.00533013",
    )
    five_big = [event(i, data={"b": "x" * 60_000}) for i in range(5)]  # each fits, total > 256 KiB
    assert_error(await api.call("POST", EVENTS, {"events": five_big}), 400, "EG.00533007")
    huge = b'{"events": [' + b" " * (2 * 1024 * 1024) + b"]}"
    assert_error(await api.call("POST", EVENTS, data=huge), 400, "EG.00533007")
    assert (await stored(api))["total"] == 20


async def test_body_of_exactly_256_kib_is_accepted(api: Api) -> None:
    body = {"events": [event(i, data={"b": ""}) for i in range(5)]}
    pad = 262144 - len(orjson.dumps(body))
    body["events"][0]["data"]["b"] = "x" * (pad - 20_000 * 4)
    for e in body["events"][1:]:
        e["data"]["b"] = "x" * 20_000
    raw = orjson.dumps(body)
    assert len(raw) == 262144
    assert (await api.call("POST", EVENTS, data=raw)).status == 200


async def test_unknown_source_fails_the_whole_request(api: Api) -> None:
    reply = await api.call("POST", EVENTS, {"events": [event(1), event(2, source="billing")]})
    assert_error(reply, 404, "EG.00014040")
    assert "billing" in reply.body["error_msg"]  # billing belongs to the other channel
    assert (await stored(api))["total"] == 0
    assert_error(
        await api.call("POST", f"{P}/channels/nope/events", {"events": [event(1)]}),
        404,
        "EG.00014040",
    )


async def test_inspection_filters_limit_offset_and_delete(api: Api) -> None:
    await api.call("POST", EVENTS, {"events": [event(i) for i in range(5)]})
    other = f"{P}/channels/{OTHER_CHANNEL_ID}/events"
    await api.call("POST", other, {"events": [event(f"b{i}", source="billing") for i in range(3)]})
    assert (await stored(api))["total"] == 8
    page = await stored(api, channel_id=CHANNEL_ID, limit="2", offset="1")
    assert page["total"] == 5
    assert [r["event"]["id"] for r in page["events"]] == ["1", "2"]
    billing = await stored(api, source="billing")
    assert [r["event"]["id"] for r in billing["events"]] == ["b0", "b1", "b2"]
    assert (await stored(api, source="billing", channel_id=CHANNEL_ID))["total"] == 0
    assert (await stored(api, offset="100"))["events"] == []
    assert_error(
        await api.call("GET", "/emulator/events", params={"limit": "1000001"}), 400, "EG.00513000"
    )
    assert (await api.call("DELETE", "/emulator/events")).status == 204
    assert await stored(api) == {"total": 0, "events": []}


async def test_inspection_returns_100k_events_in_one_call(api: Api) -> None:
    log = api.server.app[STATE].events
    for start in range(0, 100_000, 20):
        log.append(CHANNEL_ID, [event(i) for i in range(start, start + 20)])
    began = time.perf_counter()
    body = await stored(api, limit="1000000")
    assert body["total"] == 100_000
    assert body["events"][-1]["event"]["id"] == "99999"
    assert time.perf_counter() - began < 5  # generous: typically well under a second
    assert len((await stored(api))["events"]) == 1000  # default limit


async def test_stats_count_every_put_events_request(api: Api) -> None:
    await api.call("POST", EVENTS, {"events": [event(1), event("x", data=3)]})
    await api.call("POST", EVENTS, {"events": [event(i) for i in range(21)]})
    await api.call("POST", EVENTS, data=b"garbage")
    stats = (await api.call("GET", "/emulator/stats")).body
    assert stats["put_events_requests"] == 3
    assert (stats["events_accepted"], stats["events_failed"]) == (1, 1)
    assert (await api.call("DELETE", "/emulator/stats")).status == 204
    assert (await api.call("GET", "/emulator/stats")).body["put_events_requests"] == 0


async def test_data_dir_gets_json_lines(tmp_path: Path) -> None:
    data_dir = tmp_path / "eg"
    async with running(data_dir=str(data_dir)) as api:
        await api.source("orders")
        await api.call("POST", EVENTS, {"events": [event(1), event("bad", data=1), event(2)]})
        await api.call("POST", EVENTS, {"events": [event(3)]})
        lines = (data_dir / "events.jsonl").read_bytes().splitlines()
    records = [orjson.loads(line) for line in lines]
    assert [r["event"]["id"] for r in records] == ["1", "2", "3"]
    assert all(set(r) == {"received_at", "channel_id", "event"} for r in records)
    assert records[0]["channel_id"] == CHANNEL_ID
    assert RFC3339_US.match(records[0]["received_at"])


async def test_chunked_body_over_256_kib_is_rejected(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"events": ['
        for _ in range(300):
            yield b" " * 1024
        yield b"]}"

    url = api.server.url + EVENTS
    async with api.session.post(url, data=chunks()) as resp:
        assert resp.status == 400
        assert (await resp.json())["error_code"] == "EG.00533007"
