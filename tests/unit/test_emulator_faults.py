"""Fault injection of the EG emulator (design.md §9), observed as a client sees it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.test_emulator import CHANNEL_ID, Api, P, assert_error, running
from tests.unit.test_emulator_events import EVENTS, event, stored


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running() as client:
        await client.source("orders")
        yield client


async def fault(api: Api, **body: Any) -> str:
    reply = await api.call("POST", "/emulator/faults", body)
    assert reply.status == 201, reply.body
    return str(reply.body["id"])


async def put(api: Api, *ids: str) -> Any:
    return await api.call("POST", EVENTS, {"events": [event(i) for i in ids or ("1",)]})


async def test_status_fault_with_count(api: Api) -> None:
    await fault(api, status=503, count=2)
    for _ in range(2):
        assert_error(await put(api), 503, "EG.00015000")
    assert (await put(api)).status == 200
    assert (await api.call("GET", "/emulator/stats")).body["put_events_requests"] == 3
    assert (await api.call("GET", "/emulator/faults")).body == {"faults": []}
    assert (await stored(api))["total"] == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "APIG.0308"),
        (500, "EG.00015000"),
        (401, "APIGW.0301"),
        (403, "EG.00014030"),
        (404, "EG.00014040"),
        (400, "EG.00014000"),
    ],
)
async def test_default_error_code_per_status(api: Api, status: int, code: str) -> None:
    await fault(api, status=status, count=1)
    assert_error(await put(api), status, code)


async def test_retry_after_is_sent_verbatim(api: Api) -> None:
    await fault(api, status=429, count=1, retry_after=7)
    await fault(
        api,
        status=503,
        count=1,
        retry_after="Wed, 21 Oct 2015 07:28:00 GMT",
        error_code="EG.00015030",
    )
    first, second = await put(api), await put(api)
    assert (first.status, first.headers["Retry-After"]) == (429, "7")
    assert second.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert_error(second, 503, "EG.00015030")
    assert "Retry-After" not in (await put(api)).headers


async def test_latency_keeps_requests_concurrent(api: Api) -> None:
    await fault(api, latency_ms=300)
    began = time.perf_counter()
    replies = await asyncio.gather(put(api, "a"), put(api, "b"))
    elapsed = time.perf_counter() - began
    assert [r.status for r in replies] == [200, 200]
    assert 0.3 <= elapsed < 0.55
    assert (await stored(api))["total"] == 2


async def test_event_ids_fail_only_those_events(api: Api) -> None:
    await fault(api, event_ids=["b"])
    await fault(api, event_ids=["c"], error_code="EG.00015000", count=1)
    reply = await put(api, "a", "b", "c")
    assert reply.status == 200
    assert reply.body["failed_count"] == 2
    assert [(e["event_id"], e["error_code"]) for e in reply.body["events"]] == [
        ("a", None),
        ("b", "EG.00513000"),
        ("c", "EG.00015000"),
    ]
    retry = await put(api, "b", "c")
    assert [e["error_code"] for e in retry.body["events"]] == ["EG.00513000", None]
    assert [r["event"]["id"] for r in (await stored(api))["events"]] == ["a", "c"]


async def test_faults_match_their_path(api: Api) -> None:
    await fault(api, path="sources", status=500)
    assert (await put(api)).status == 200
    assert_error(await api.call("GET", f"{P}/sources"), 500, "EG.00015000")
    assert (await api.call("GET", f"{P}/channels")).status == 200
    assert (await api.call("DELETE", "/emulator/faults")).status == 204
    await fault(api, path="*", status=503, count=2)
    assert_error(await api.call("GET", f"{P}/channels/{CHANNEL_ID}"), 503, "EG.00015000")
    assert (await api.call("GET", "/emulator/events")).status == 200  # /emulator/ is exempt
    assert_error(await put(api), 503, "EG.00015000")
    assert (await put(api)).status == 200


async def test_auth_fault_fails_the_auth_check(api: Api) -> None:
    await fault(api, path="auth", status=401, count=1)
    reply = await api.call("GET", f"{P}/sources")
    assert_error(reply, 401, "APIGW.0301")
    assert reply.body["error_msg"].startswith("Incorrect IAM authentication information: ")
    assert (await api.call("GET", f"{P}/sources")).status == 200


async def test_faults_apply_in_creation_order(api: Api) -> None:
    first = await fault(api, status=500, error_code="EG.first", count=1)
    await fault(api, status=500, error_code="EG.second", count=1)
    listed = (await api.call("GET", "/emulator/faults")).body["faults"]
    assert [f["error_code"] for f in listed] == ["EG.first", "EG.second"]
    assert listed[0]["id"] == first
    assert_error(await put(api), 500, "EG.first")
    assert_error(await put(api), 500, "EG.second")


async def test_delete_one_fault(api: Api) -> None:
    fault_id = await fault(api, status=500)
    assert (await api.call("DELETE", f"/emulator/faults/{fault_id}")).status == 204
    assert (await put(api)).status == 200
    assert_error(await api.call("DELETE", f"/emulator/faults/{fault_id}"), 404, "EG.00014040")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": 500, "latency": 10}, "latency"),
        ({"status": 200}, "status"),
        ({"status": True}, "status"),
        ({"status": 500, "path": "subscriptions"}, "path"),
        ({"status": 500, "count": 0}, "count"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"status": 500, "retry_after": 1.5}, "retry_after"),
        ({"event_ids": "a"}, "event_ids"),
        ({"event_ids": ["a"], "status": 500}, "event_ids"),
        ({"path": "events"}, "no effect"),
        (["status", 500], "body"),
    ],
)
async def test_invalid_fault_is_400(api: Api, body: Any, field: str) -> None:
    reply = await api.call("POST", "/emulator/faults", body)
    assert_error(reply, 400, "EG.00513000")
    assert field in reply.body["error_msg"]
    assert (await api.call("GET", "/emulator/faults")).body == {"faults": []}
