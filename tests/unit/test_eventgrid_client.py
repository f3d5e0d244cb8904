"""The EG client and ensure_source against the emulator as a real HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from bridge.emulator import EmulatorConfig, start_emulator
from bridge.errors import ErrorKind, EventGridError, RegistrationError, TransportError
from bridge.eventgrid.auth import NoAuth, TokenAuth
from bridge.eventgrid.client import EventGridClient
from bridge.eventgrid.registration import SourceSpec, ensure_source
from bridge.settings import host_port
from tests.support.rabbit import free_port

PROJECT = "0123456789abcdef0123456789abcdef"
CHANNEL = "11111111-2222-3333-4444-555555555555"
OTHER_CHANNEL = "99999999-2222-3333-4444-555555555555"


@pytest.fixture
async def emu() -> AsyncIterator[str]:
    server = await start_emulator(EmulatorConfig(
        port=0, channels={"test": CHANNEL, "other": OTHER_CHANNEL}, auth="token",
        tokens=["tok-ABC123"]))
    try:
        yield server.url
    finally:
        await server.close()


@pytest.fixture
async def client(emu: str) -> AsyncIterator[EventGridClient]:
    c = EventGridClient(emu, PROJECT, TokenAuth(SecretStr("tok-ABC123")), timeout_s=5)
    try:
        yield c
    finally:
        await c.close()


async def fault(url: str, **body: Any) -> None:
    async with aiohttp.ClientSession() as http:
        await http.post(url + "/emulator/faults", json=body)


def events_body(*ids: str, source: str = "src") -> bytes:
    return orjson.dumps({"events": [
        {"id": i, "source": source, "specversion": "1.0", "type": "t", "data": {"i": i}}
        for i in ids]})


async def test_ensure_source_creates_then_is_unchanged(client: EventGridClient) -> None:
    spec = SourceSpec(name="orders", channel_id=CHANNEL, description="one")
    created, action = await ensure_source(client, spec)
    assert action == "created"
    assert created["status"] == "RUNNING"
    again, action = await ensure_source(client, spec)
    assert (again["id"], action) == (created["id"], "unchanged")
    assert "detail" not in created or not created["detail"]  # APPLICATION: no secrets sent


async def test_ensure_source_updates_description_and_mq_detail(client: EventGridClient) -> None:
    spec = SourceSpec(name="mq", channel_id=CHANNEL, register_type="RABBITMQ",
                      detail={"queue_name": "q", "password": "pw"})
    first, _ = await ensure_source(client, spec)
    assert first["detail"]["queue_name"] == "q"
    spec2 = SourceSpec(name="mq", channel_id=CHANNEL, register_type="RABBITMQ",
                       description="new", detail={"queue_name": "q2", "password": "pw"})
    updated, action = await ensure_source(client, spec2)
    assert action == "updated"
    assert updated["id"] == first["id"]
    assert (updated["description"], updated["detail"]["queue_name"]) == ("new", "q2")


async def test_type_or_channel_mismatch_is_a_clear_error(client: EventGridClient) -> None:
    await ensure_source(client, SourceSpec(name="fixed", channel_id=CHANNEL))
    with pytest.raises(RegistrationError, match="channel cannot change"):
        await ensure_source(client, SourceSpec(name="fixed", channel_id=OTHER_CHANNEL))
    with pytest.raises(RegistrationError, match="type cannot change"):
        await ensure_source(client, SourceSpec(name="fixed", channel_id=CHANNEL,
                                               register_type="RABBITMQ"))


async def test_create_race_falls_back_to_reconcile(client: EventGridClient, emu: str) -> None:
    spec = SourceSpec(name="racy", channel_id=CHANNEL, description="mine")
    # Another replica creates it between our list and our create: simulate by creating it
    # first and hiding it from the next list call.
    other = await client.create_source({"name": "racy", "channel_id": CHANNEL,
                                        "description": "theirs"})
    real_list = client.list_sources
    calls = 0

    async def list_once_empty(**kw: Any) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        return [] if calls == 1 else await real_list(**kw)

    client.list_sources = list_once_empty  # type: ignore[method-assign]
    source, action = await ensure_source(client, spec)
    assert (source["id"], action, source["description"]) == (other["id"], "updated", "mine")


async def test_list_pages_through_many_sources(client: EventGridClient) -> None:
    for i in range(30):
        await client.create_source({"name": f"s{i:02d}", "channel_id": CHANNEL})
    everything = await client.list_sources()
    assert len(everything) == 30
    assert await client.list_sources(name="nope") == []


async def test_errors_are_typed(client: EventGridClient, emu: str) -> None:
    with pytest.raises(EventGridError) as err:
        await client.get_source("00000000-0000-0000-0000-000000000000")
    assert err.value.status == 404
    assert err.value.kind is ErrorKind.FATAL
    assert err.value.request_id
    with pytest.raises(EventGridError) as err:
        await client.create_source({"name": "hc.bad", "channel_id": CHANNEL})
    assert (err.value.status, err.value.error_code) == (400, "EG.00513000")
    assert err.value.kind is ErrorKind.PERMANENT


async def test_wrong_token_is_401_fatal(emu: str) -> None:
    c = EventGridClient(emu, PROJECT, TokenAuth(SecretStr("wrong")), timeout_s=5)
    try:
        with pytest.raises(EventGridError) as err:
            await c.list_sources()
    finally:
        await c.close()
    assert err.value.status == 401
    assert err.value.error_code == "APIGW.0301"
    assert err.value.reason == "auth"
    assert "wrong" not in str(err.value)


async def test_put_events_per_event_results(client: EventGridClient, emu: str) -> None:
    await client.create_source({"name": "src", "channel_id": CHANNEL})
    await fault(emu, path="events", event_ids=["b"], error_code="EG.00513000")
    result = await client.put_events(CHANNEL, events_body("a", "b", "c"))
    assert result.accepted == {"a", "c"}
    assert result.failed["b"].error_code == "EG.00513000"
    assert result.failed["b"].kind is ErrorKind.PERMANENT


async def test_put_events_throttled_carries_retry_after(client: EventGridClient, emu: str
                                                        ) -> None:
    await client.create_source({"name": "src", "channel_id": CHANNEL})
    await fault(emu, path="events", status=429, retry_after="2", count=1)
    with pytest.raises(EventGridError) as err:
        await client.put_events(CHANNEL, events_body("a"))
    assert err.value.kind is ErrorKind.TRANSIENT
    assert err.value.retry_after_s == 2.0
    assert err.value.reason == "throttled"


async def test_unknown_source_name_is_fatal(client: EventGridClient) -> None:
    with pytest.raises(EventGridError) as err:
        await client.put_events(CHANNEL, events_body("a", source="not-registered"))
    assert err.value.status == 404
    assert err.value.kind is ErrorKind.FATAL


async def test_timeout_and_refused_are_transport_errors(emu: str) -> None:
    await fault(emu, path="*", latency_ms=2000)
    slow = EventGridClient(emu, PROJECT, TokenAuth(SecretStr("tok-ABC123")), timeout_s=0.3)
    host, _ = host_port(emu.removeprefix("http://"))
    refused = EventGridClient(f"http://{host}:{free_port()}", PROJECT, NoAuth(), timeout_s=2)
    try:
        with pytest.raises(TransportError) as err:
            await slow.list_sources()
        assert err.value.reason == "timeout"
        with pytest.raises(TransportError) as err:
            await refused.list_sources()
        assert err.value.reason == "network"
        assert err.value.kind is ErrorKind.TRANSIENT
    finally:
        await slow.close()
        await refused.close()
