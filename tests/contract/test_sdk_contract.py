"""Contract tests: Huawei's own Python SDK (``huaweicloudsdkeg``, AK/SK
``BasicCredentials(ak, sk, project_id)``) against the emulator over real HTTP.

The SDK signs every header it sends (content-type, host, user-agent, x-project-id,
x-sdk-date) with its own signer, so these calls check the emulator's verification and API
shapes against Huawei's client, and through them our signer (both sides must agree). The
SDK is blocking: its calls run in a worker thread (``asyncio.to_thread``) while the emulator
serves on the test's event loop. It talks plain http to the emulator's URL; with
``BasicCredentials(..., project_id)`` it needs no IAM lookup and sends ``X-Project-Id``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkeg.v1 import (
    ChannelUpdateReq,
    CloudEvents,
    CreateEventSourceRequest,
    CustomizeSourceCreateReq,
    CustomizeSourceUpdateReq,
    DeleteEventSourceRequest,
    EgClient,
    ListChannelsRequest,
    ListEventSourcesRequest,
    PutEventsReq,
    PutEventsRequest,
    ShowDetailOfChannelRequest,
    ShowDetailOfEventSourceRequest,
    UpdateChannelRequest,
    UpdateEventSourceRequest,
)

from bridge.emulator import EmulatorConfig, EmulatorServer, default_channel_id, start_emulator

PROJECT = "0123456789abcdef0123456789abcdef"
CHANNEL = "11111111-2222-3333-4444-555555555555"
AK, SK = "AKCONTRACT0000000001", "SKcontract/secret+value00000000000000001"
T = TypeVar("T")


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    server = await start_emulator(EmulatorConfig(
        port=0, channels={"orders": CHANNEL}, auth="aksk", access_keys={AK: SK}))
    try:
        yield server
    finally:
        await server.close()


def sdk_client(url: str, sk: str = SK) -> EgClient:
    config = HttpConfig.get_default_config()
    config.ignore_ssl_verification = True  # plain http to the emulator; nothing to verify
    config.timeout = (5, 10)
    return (EgClient.new_builder().with_http_config(config)
            .with_credentials(BasicCredentials(AK, sk, PROJECT)).with_endpoint(url).build())


@pytest.fixture
async def sdk(emulator: EmulatorServer) -> EgClient:
    return sdk_client(emulator.url)


async def call(fn: Callable[[Any], T], request: Any) -> T:
    """Run one blocking SDK call in a worker thread."""
    return await asyncio.to_thread(fn, request)


async def sdk_error(fn: Callable[[Any], Any], request: Any) -> ClientRequestException:
    with pytest.raises(ClientRequestException) as err:
        await call(fn, request)
    return err.value


def create(name: str, channel_id: str = CHANNEL) -> CreateEventSourceRequest:
    return CreateEventSourceRequest(body=CustomizeSourceCreateReq(
        name=name, channel_id=channel_id, description="from the SDK", type="APPLICATION"))


async def test_source_lifecycle(sdk: EgClient) -> None:
    created = await call(sdk.create_event_source, create("orders"))
    assert created.name == "orders"
    assert created.channel_id == CHANNEL
    assert created.type == "APPLICATION"
    assert created.status == "RUNNING"
    assert created.x_request_id

    listed = await call(sdk.list_event_sources, ListEventSourcesRequest(name="orders"))
    assert (listed.total, listed.size) == (1, 1)
    assert listed.items[0].id == created.id

    shown = await call(sdk.show_detail_of_event_source,
                       ShowDetailOfEventSourceRequest(source_id=created.id))
    assert (shown.name, shown.description) == ("orders", "from the SDK")

    updated = await call(sdk.update_event_source, UpdateEventSourceRequest(
        source_id=created.id, body=CustomizeSourceUpdateReq(description="changed")))
    assert updated.description == "changed"
    assert updated.name == "orders"

    await call(sdk.delete_event_source, DeleteEventSourceRequest(source_id=created.id))
    err = await sdk_error(sdk.show_detail_of_event_source,
                          ShowDetailOfEventSourceRequest(source_id=created.id))
    assert (err.status_code, err.error_code) == (404, "EG.00014040")


async def test_list_paging_with_the_sdk(sdk: EgClient) -> None:
    for i in range(5):
        await call(sdk.create_event_source, create(f"src-{i}"))
    page = await call(sdk.list_event_sources,
                      ListEventSourcesRequest(offset=3, limit=10, sort="name:ASC"))
    assert (page.total, page.size) == (5, 2)
    assert [s.name for s in page.items] == ["src-3", "src-4"]
    err = await sdk_error(sdk.list_event_sources, ListEventSourcesRequest(offset=5, limit=10))
    assert (err.status_code, err.error_code) == (400, "APIGW.0106")
    empty = await call(sdk.list_event_sources, ListEventSourcesRequest(name="nope"))
    assert (empty.total, empty.items) == (0, [])


async def test_channels_with_the_sdk(sdk: EgClient) -> None:
    channels = await call(sdk.list_channels, ListChannelsRequest(limit=100))
    by_name = {c.name: c for c in channels.items}
    assert by_name["default"].provider_type == "OFFICIAL"
    assert by_name["orders"].provider_type == "CUSTOM"
    assert by_name["orders"].id == CHANNEL
    shown = await call(sdk.show_detail_of_channel, ShowDetailOfChannelRequest(channel_id=CHANNEL))
    assert shown.name == "orders"
    updated = await call(sdk.update_channel, UpdateChannelRequest(
        channel_id=CHANNEL, body=ChannelUpdateReq(description="orders channel")))
    assert updated.description == "orders channel"


async def test_put_events_with_the_sdk(sdk: EgClient, emulator: EmulatorServer) -> None:
    await call(sdk.create_event_source, create("orders"))
    events = [CloudEvents(id=f"evt-{i}", source="orders", specversion="1.0",
                          type="com.example.created", datacontenttype="application/json",
                          subject="orders/1", time="2024-01-01T00:00:00Z", data={"n": i})
              for i in range(3)]
    async with aiohttp.ClientSession() as http:
        await http.post(emulator.url + "/emulator/faults",
                        json={"path": "events", "event_ids": ["evt-2"]})
        result = await call(sdk.put_events, PutEventsRequest(
            channel_id=CHANNEL, body=PutEventsReq(events=events)))
        async with http.get(emulator.url + "/emulator/events") as resp:
            stored = (await resp.json())["events"]
    assert result.failed_count == 1
    outcome = {e.event_id: e.error_code for e in result.events}
    assert outcome == {"evt-0": None, "evt-1": None, "evt-2": "EG.00513000"}
    assert result.x_request_id
    assert [row["event"]["data"] for row in stored] == [{"n": 0}, {"n": 1}]
    assert stored[0]["event"]["subject"] == "orders/1"


async def test_put_events_for_an_unknown_source_fails_the_request(sdk: EgClient) -> None:
    event = CloudEvents(id="e", source="not-registered", specversion="1.0", type="t", data={})
    err = await sdk_error(sdk.put_events, PutEventsRequest(
        channel_id=CHANNEL, body=PutEventsReq(events=[event])))
    assert (err.status_code, err.error_code) == (404, "EG.00014040")


@pytest.mark.parametrize(
    ("request_for", "status", "code"),
    [
        (lambda: create("orders"), 400, "EG.00513001"),  # duplicate name (the 2nd create)
        (lambda: create("Not Valid!"), 400, "EG.00513000"),
        (lambda: create("hc.reserved"), 400, "EG.00513000"),
        (lambda: create("on-default", default_channel_id(PROJECT)), 400, "EG.00513005"),
        (lambda: create("nowhere", "00000000-0000-0000-0000-000000000000"), 400, "EG.00513005"),
    ],
)
async def test_create_errors_carry_our_error_code(
    sdk: EgClient, request_for: Callable[[], CreateEventSourceRequest], status: int, code: str
) -> None:
    await call(sdk.create_event_source, create("orders"))
    err = await sdk_error(sdk.create_event_source, request_for())
    assert (err.status_code, err.error_code) == (status, code)
    assert err.error_msg
    assert err.request_id


async def test_unknown_ids_are_404(sdk: EgClient) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    for fn, request in (
        (sdk.show_detail_of_event_source, ShowDetailOfEventSourceRequest(source_id=missing)),
        (sdk.delete_event_source, DeleteEventSourceRequest(source_id=missing)),
        (sdk.show_detail_of_channel, ShowDetailOfChannelRequest(channel_id=missing)),
    ):
        err = await sdk_error(fn, request)
        assert (err.status_code, err.error_code) == (404, "EG.00014040")


async def test_wrong_secret_key_is_401_apigw_0301(emulator: EmulatorServer) -> None:
    wrong = sdk_client(emulator.url, sk="SKwrong")
    err = await sdk_error(wrong.list_channels, ListChannelsRequest())
    assert (err.status_code, err.error_code) == (401, "APIGW.0301")
    assert err.error_msg == "Incorrect IAM authentication information: verify aksk signature fail"
