"""AK/SK signing (AkSkAuth + the client) against the emulator's signature verification
(shared/eg-api.md §2.2): accepted requests work end to end; a wrong SK, a clock skew over
15 minutes and a tampered request are 401 ``APIGW.0301`` and fatal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr
from yarl import URL

from bridge.emulator import EmulatorConfig, start_emulator
from bridge.errors import ErrorKind, EventGridError
from bridge.eventgrid import signer
from bridge.eventgrid.auth import AkSkAuth
from bridge.eventgrid.client import EventGridClient

PROJECT = "0123456789abcdef0123456789abcdef"
CHANNEL = "11111111-2222-3333-4444-555555555555"
AK, SK = "AKTESTEXAMPLE0000001", "SKtest/Example+Secret0000000000000000001"
SIGNATURE_FAIL = "Incorrect IAM authentication information: verify aksk signature fail"


@pytest.fixture
async def emu() -> AsyncIterator[str]:
    server = await start_emulator(EmulatorConfig(
        port=0, channels={"test": CHANNEL}, auth="aksk", access_keys={AK: SK, "AK2": "SK2"}))
    try:
        yield server.url
    finally:
        await server.close()


def aksk_client(url: str, sk: str = SK, skew: timedelta = timedelta(0)) -> EventGridClient:
    auth = AkSkAuth(SecretStr(AK), SecretStr(sk), PROJECT,
                    clock=lambda: datetime.now(UTC) + skew)
    return EventGridClient(url, PROJECT, auth, timeout_s=5)


def events(*ids: str, source: str = "orders") -> bytes:
    return orjson.dumps({"events": [
        {"id": i, "source": source, "specversion": "1.0", "type": "t", "data": {"i": i}}
        for i in ids]})


async def test_signed_requests_are_accepted_end_to_end(emu: str) -> None:
    client = aksk_client(emu)
    try:
        created = await client.create_source({"name": "orders", "channel_id": CHANNEL})
        assert (await client.get_source(created["id"]))["name"] == "orders"
        updated = await client.update_source(created["id"], "new text")
        assert updated["description"] == "new text"
        # The query is signed as sent: spaces, '+', '/', '*' and non-ASCII survive.
        assert await client.list_sources(name="a b+c/d*é") == []
        assert [s["name"] for s in await client.list_sources(name="orders")] == ["orders"]
        result = await client.put_events(CHANNEL, events("e1", "e2"))
        assert result.accepted == {"e1", "e2"}
        await client.delete_source(created["id"])
    finally:
        await client.close()


async def expect_401(client: EventGridClient) -> EventGridError:
    try:
        with pytest.raises(EventGridError) as err:
            await client.list_sources()
    finally:
        await client.close()
    assert (err.value.status, err.value.error_code) == (401, "APIGW.0301")
    assert err.value.kind is ErrorKind.FATAL
    assert err.value.reason == "auth"
    return err.value


async def test_wrong_secret_key_is_rejected_once(emu: str) -> None:
    err = await expect_401(aksk_client(emu, sk="SKwrong"))
    assert err.error_msg == SIGNATURE_FAIL
    assert "SKwrong" not in str(err)
    assert SK not in str(err)
    async with aiohttp.ClientSession() as http, http.get(emu + "/emulator/stats") as resp:
        assert (await resp.json())["auth_failures"] == 1  # a bad signature is not retried


@pytest.mark.parametrize("minutes", [16, -16])
async def test_clock_skew_over_15_minutes_is_rejected(emu: str, minutes: int) -> None:
    err = await expect_401(aksk_client(emu, skew=timedelta(minutes=minutes)))
    assert err.error_msg == SIGNATURE_FAIL


@pytest.mark.parametrize("minutes", [14, -14])
async def test_clock_skew_within_15_minutes_is_accepted(emu: str, minutes: int) -> None:
    client = aksk_client(emu, skew=timedelta(minutes=minutes))
    try:
        assert await client.list_sources() == []
    finally:
        await client.close()


async def raw(method: str, url: str, headers: dict[str, str], body: bytes = b"") -> Any:
    async with aiohttp.ClientSession() as http, http.request(
        method, URL(url, encoded=True), headers=headers, data=body or None,
    ) as resp:
        return resp.status, await resp.json()


async def signed(method: str, url: str, body: bytes = b"", **extra: str) -> dict[str, str]:
    auth = AkSkAuth(SecretStr(AK), SecretStr(SK), PROJECT)
    return {"Content-Type": "application/json", **extra,
            **(await auth.headers(method, url, body))}


async def test_tampered_requests_are_rejected(emu: str) -> None:
    sources = f"{emu}/v1/{PROJECT}/sources"
    body = orjson.dumps({"name": "orders", "channel_id": CHANNEL})
    headers = await signed("POST", sources, body)
    status, reply = await raw("POST", sources, headers, body.replace(b"orders", b"others"))
    assert (status, reply["error_code"], reply["error_msg"]) == (401, "APIGW.0301", SIGNATURE_FAIL)
    assert "does not match" in reply["error_details"]
    query_url = sources + "?name=orders"
    headers = await signed("GET", query_url)
    assert (await raw("GET", sources + "?name=others", headers))[0] == 401
    headers = await signed("GET", sources)
    assert (await raw("GET", sources, {**headers, "X-Project-Id": "f" * 32}))[0] == 401
    assert (await raw("POST", sources, headers))[0] == 401  # method changed
    assert (await raw("POST", sources, await signed("POST", sources, body), body))[0] == 200


async def test_verifier_honours_the_signed_headers_list(emu: str) -> None:
    url = f"{emu}/v1/{PROJECT}/channels"
    host = signer.host_of(url)
    date = datetime.now(UTC).strftime(signer.DATE_FORMAT)
    # Python-SDK style: every header signed, Content-Type and User-Agent included.
    py_headers = {"Content-Type": "application/json", "User-Agent": "test/1", "Host": host,
                  "X-Project-Id": PROJECT, "X-Sdk-Date": date}
    py_headers["Authorization"] = signer.sign("GET", url, py_headers, b"", access_key="AK2",
                                              secret_key="SK2")
    assert (await raw("GET", url, py_headers))[0] == 200
    # Go-SDK style: only X-Sdk-Date signed; other headers may change freely.
    go_headers = {"X-Sdk-Date": date}
    go_headers["Authorization"] = signer.sign("GET", url, go_headers, b"", access_key="AK2",
                                              secret_key="SK2")
    assert (await raw("GET", url, {**go_headers, "User-Agent": "changed"}))[0] == 200
    # A signed header that was changed on the way fails.
    assert (await raw("GET", url, {**py_headers, "User-Agent": "changed"}))[0] == 401


async def test_missing_or_unsigned_date_and_unknown_key_fail(emu: str) -> None:
    url = f"{emu}/v1/{PROJECT}/sources"
    status, reply = await raw("GET", url, {})
    assert (status, reply["error_msg"]) == (
        401, "Incorrect IAM authentication information: x-auth-token not found")
    host = signer.host_of(url)
    no_date = {"Host": host}
    value = signer.authorization_value(AK, ["host"], signer.signature(SK, "x"))
    status, reply = await raw("GET", url, {**no_date, "Authorization": value})
    assert (status, reply["error_msg"]) == (401, SIGNATURE_FAIL)
    assert "x-sdk-date must be a signed header" in reply["error_details"]
    unknown = {"X-Sdk-Date": datetime.now(UTC).strftime(signer.DATE_FORMAT)}
    unknown["Authorization"] = signer.sign("GET", url, unknown, b"", access_key="AKNOPE",
                                           secret_key=SK)
    status, reply = await raw("GET", url, unknown)
    assert (status, reply["error_msg"]) == (401, SIGNATURE_FAIL)
    assert "unknown access key" in reply["error_details"]


async def test_signing_adds_date_host_and_project_and_hides_the_secret() -> None:
    auth = AkSkAuth(SecretStr(AK), SecretStr(SK), PROJECT,
                    clock=lambda: datetime(2024, 1, 1, tzinfo=UTC))
    headers = await auth.headers("GET", "http://127.0.0.1:8088/v1/p/sources?limit=1", b"")
    assert headers["X-Sdk-Date"] == "20240101T000000Z"
    assert headers["Host"] == "127.0.0.1:8088"
    assert headers["X-Project-Id"] == PROJECT
    assert "SignedHeaders=host;x-project-id;x-sdk-date," in headers["Authorization"]
    assert SK not in repr(auth)
    assert AK not in repr(auth)
    assert auth.invalidate(headers) is False
