"""IAM password tokens (IamTokenAuth + the client's 401 retry) against the emulator's real IAM
endpoint (shared/eg-api.md §2.1, design §7: refreshed before expiry, at once after a 401,
concurrent requests share one refresh)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bridge.emulator import EmulatorConfig, EmulatorServer, start_emulator
from bridge.errors import ErrorKind, EventGridError, TransportError
from bridge.eventgrid.client import EventGridClient
from bridge.eventgrid.iam import IamError, IamTokenAuth, scope_of
from bridge.settings import host_port
from tests.support.rabbit import free_port

PROJECT = "0123456789abcdef0123456789abcdef"
CHANNEL = "11111111-2222-3333-4444-555555555555"
PASSWORD = "Corr3ct-Horse!"

Start = Callable[..., Awaitable[EmulatorServer]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[EmulatorServer] = []

    async def _start(token_ttl_s: float = 3600) -> EmulatorServer:
        server = await start_emulator(EmulatorConfig(
            port=0, channels={"test": CHANNEL}, auth="token", token_ttl_s=token_ttl_s,
            iam_users={"acme/bridge": PASSWORD}))
        servers.append(server)
        return server

    yield _start
    for server in servers:
        await server.close()


def iam_client(url: str, password: str = PASSWORD, iam_url: str | None = None) -> EventGridClient:
    auth = IamTokenAuth(iam_url or url, "acme", "bridge", SecretStr(password), "cn-north-4",
                        timeout_s=5)
    return EventGridClient(url, PROJECT, auth, timeout_s=5)


async def control(url: str, method: str, path: str, **kw: Any) -> Any:
    async with aiohttp.ClientSession() as http, http.request(method, url + path, **kw) as resp:
        assert resp.status < 300, await resp.text()
        return await resp.json() if resp.status != 204 else None


async def stats(url: str) -> dict[str, int]:
    result: dict[str, int] = await control(url, "GET", "/emulator/stats")
    return result


async def test_token_is_fetched_once_and_reused(start: Start) -> None:
    server = await start()
    client = iam_client(server.url)
    try:
        for _ in range(10):
            assert await client.list_sources() == []
    finally:
        await client.close()
    counters = await stats(server.url)
    assert counters["iam_token_requests"] == 1
    assert counters["auth_failures"] == 0


async def test_short_lived_tokens_are_refreshed_before_they_expire(start: Start) -> None:
    server = await start(token_ttl_s=2)
    client = iam_client(server.url)
    deadline = time.monotonic() + 6.5
    calls = 0
    try:
        while time.monotonic() < deadline:
            await client.list_sources()
            calls += 1
            await asyncio.sleep(0.05)
    finally:
        await client.close()
    counters = await stats(server.url)
    assert counters["auth_failures"] == 0, counters  # never sent an expired token
    # 6.5 s of 2 s tokens: at least 4 tokens, and no token per request.
    assert 4 <= counters["iam_token_requests"] <= 10, counters
    assert calls > 40


async def test_revoked_token_gets_one_refresh_and_the_request_succeeds(start: Start) -> None:
    server = await start()
    client = iam_client(server.url)
    try:
        await client.list_sources()
        assert (await control(server.url, "DELETE", "/emulator/tokens"))["revoked"] == 1
        assert await client.list_sources() == []
    finally:
        await client.close()
    counters = await stats(server.url)
    assert counters["auth_failures"] == 1
    assert counters["iam_token_requests"] == 2


async def test_401_with_a_fresh_token_is_fatal_after_one_refresh(start: Start) -> None:
    server = await start()
    client = iam_client(server.url)
    try:
        await client.list_sources()
        await control(server.url, "POST", "/emulator/faults",
                      json={"path": "auth", "status": 401, "count": 2})
        with pytest.raises(EventGridError) as err:
            await client.list_sources()
    finally:
        await client.close()
    assert (err.value.status, err.value.error_code) == (401, "APIGW.0301")
    assert err.value.kind is ErrorKind.FATAL
    assert (await stats(server.url))["iam_token_requests"] == 2  # one refresh, not a loop


async def test_twenty_concurrent_requests_share_one_refresh(start: Start) -> None:
    server = await start()
    client = iam_client(server.url)
    try:
        await asyncio.gather(*(client.list_sources() for _ in range(20)))
        assert (await stats(server.url))["iam_token_requests"] == 1
        await control(server.url, "DELETE", "/emulator/tokens")
        results = await asyncio.gather(*(client.list_sources() for _ in range(20)))
    finally:
        await client.close()
    assert results == [[]] * 20
    counters = await stats(server.url)
    assert counters["iam_token_requests"] == 2
    assert counters["auth_failures"] == 20


async def test_wrong_password_is_a_clear_fatal_error(start: Start) -> None:
    server = await start()
    client = iam_client(server.url, password="not-the-password")
    try:
        with pytest.raises(IamError) as err:
            await client.list_sources()
    finally:
        await client.close()
    assert err.value.status == 401
    assert err.value.kind is ErrorKind.FATAL
    assert err.value.reason == "auth"
    text = str(err.value)
    assert "The username or password is wrong." in text
    assert "eventgrid.auth.iam" in text
    assert "not-the-password" not in text
    assert (await stats(server.url))["api_requests"] == 0  # EG was never called


async def test_iam_outage_is_transient_and_recovers(start: Start) -> None:
    server = await start()
    client = iam_client(server.url)
    try:
        await control(server.url, "POST", "/emulator/faults",
                      json={"path": "iam", "status": 503, "count": 1})
        with pytest.raises(IamError) as err:
            await client.list_sources()
        assert err.value.kind is ErrorKind.TRANSIENT
        assert err.value.reason == "server_error"
        assert await client.list_sources() == []
    finally:
        await client.close()


async def test_unreachable_iam_is_a_network_error(start: Start) -> None:
    server = await start()
    host, _ = host_port(server.url.removeprefix("http://"))
    client = iam_client(server.url, iam_url=f"http://{host}:{free_port()}")
    try:
        with pytest.raises(TransportError) as err:
            await client.list_sources()
    finally:
        await client.close()
    assert err.value.reason == "network"
    assert err.value.kind is ErrorKind.TRANSIENT


async def test_failed_background_refresh_keeps_the_valid_token(start: Start) -> None:
    server = await start(token_ttl_s=4)
    client = iam_client(server.url)
    try:
        await client.list_sources()
        await asyncio.sleep(2.2)  # past half the lifetime: a background refresh starts
        await control(server.url, "POST", "/emulator/faults",
                      json={"path": "iam", "status": 500, "count": 1})
        assert await client.list_sources() == []  # old token still valid, no error
        await asyncio.sleep(0.1)  # let the background refresh fail
    finally:
        await client.close()
    counters = await stats(server.url)
    assert counters["auth_failures"] == 0
    assert counters["iam_token_requests"] == 2  # the first token and the failed refresh


def test_no_secret_in_repr() -> None:
    auth = IamTokenAuth("https://iam.example", "acme", "bridge", SecretStr(PASSWORD), "p")
    assert PASSWORD not in repr(auth)
    assert "bridge" in repr(auth)


def test_project_is_an_id_when_it_looks_like_one() -> None:
    assert scope_of(PROJECT) == {"project": {"id": PROJECT}}
    assert scope_of("cn-north-4") == {"project": {"name": "cn-north-4"}}
