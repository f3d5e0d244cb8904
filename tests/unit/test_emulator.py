"""The EG emulator's source and channel APIs, auth, error envelope and lifecycle, driven over
real HTTP (shared/design.md §9, shared/eg-api.md §3, §4, §6)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.emulator import (
    DEFAULT_PROJECT_ID,
    EmulatorConfig,
    EmulatorServer,
    create_app,
    default_channel_id,
    run_emulator,
    start_emulator,
)
from bridge.errors import ConfigError

CHANNEL_ID = "4d9c1111-2222-4333-8444-555566667777"
OTHER_CHANNEL_ID = "4d9c1111-2222-4333-8444-000000000002"
P = f"/v1/{DEFAULT_PROJECT_ID}"
RFC3339_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


@dataclass
class Api:
    """A thin client: every call returns status, parsed JSON body (or None) and headers."""

    session: aiohttp.ClientSession
    server: EmulatorServer

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if data is not None:
            kwargs["data"] = io.BytesIO(data)
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.server.url + path, **kwargs) as resp:
            raw = await resp.read()
            parsed = orjson.loads(raw) if raw else None
            return Reply(resp.status, parsed, resp.headers)

    async def source(self, name: str, channel_id: str = CHANNEL_ID, **extra: Any) -> Any:
        reply = await self.call(
            "POST", f"{P}/sources", {"name": name, "channel_id": channel_id, **extra}
        )
        assert reply.status == 200, reply.body
        return reply.body


@asynccontextmanager
async def running(**config: Any) -> AsyncIterator[Api]:
    """Start an emulator on a free port with the ``orders``/``billing`` channels."""
    config.setdefault("channels", {"orders": CHANNEL_ID, "billing": OTHER_CHANNEL_ID})
    server = await start_emulator(EmulatorConfig(port=0, **config))
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(session, server)
    finally:
        await server.close()


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running() as client:
        yield client


def assert_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply.body
    assert reply.body["error_code"] == code, reply.body
    assert reply.body["error_msg"]
    assert reply.body["request_id"] == reply.headers["X-Request-Id"]


async def test_source_crud_round_trip(api: Api) -> None:
    created = await api.source(
        "orders-rabbit",
        description="Orders",
        type="RABBITMQ",
        detail={"queue_name": "orders", "password": "s3cret"},
    )
    assert uuid.UUID(created["id"]).version == 4
    assert created | {"id": "x", "created_time": "t", "updated_time": "t"} == {
        "id": "x",
        "name": "orders-rabbit",
        "label": "orders-rabbit",
        "description": "Orders",
        "provider_type": "CUSTOM",
        "created_time": "t",
        "updated_time": "t",
        "channel_id": CHANNEL_ID,
        "channel_name": "orders",
        "type": "RABBITMQ",
        "detail": {"queue_name": "orders", "password": "s3cret"},
        "status": "RUNNING",
        "error_info": {},
    }
    assert RFC3339_US.match(created["created_time"])
    assert created["updated_time"] == created["created_time"]
    url = f"{P}/sources/{created['id']}"
    assert (await api.call("GET", url)).body == created

    updated = await api.call("PUT", url, {"description": "New", "detail": {"queue_name": "q2"}})
    assert updated.status == 200
    assert updated.body["description"] == "New"
    assert updated.body["detail"] == {"queue_name": "q2"}
    assert updated.body["updated_time"] > created["updated_time"]
    assert updated.body["created_time"] == created["created_time"]
    assert (await api.call("GET", url)).body == updated.body

    deleted = await api.call("DELETE", url)
    assert (deleted.status, deleted.body) == (204, None)
    assert_error(await api.call("GET", url), 404, "EG.00014040")
    assert_error(await api.call("DELETE", url), 404, "EG.00014040")
    assert_error(await api.call("PUT", url, {"description": "x"}), 404, "EG.00014040")


async def test_update_clears_description_and_rejects_immutable_changes(api: Api) -> None:
    src = await api.source("s1", description="keep")
    url = f"{P}/sources/{src['id']}"
    same = await api.call("PUT", url, {"name": "s1", "type": "APPLICATION", "whatever": 1})
    assert same.status == 200
    assert same.body["description"] == "keep"
    assert (await api.call("PUT", url, {"description": ""})).body["description"] == ""
    reply = await api.call("PUT", url, {"channel_id": OTHER_CHANNEL_ID, "type": "ROCKETMQ"})
    assert_error(reply, 400, "EG.00513000")
    assert "channel_id" in reply.body["error_msg"]
    assert "type" in reply.body["error_msg"]
    assert_error(await api.call("PUT", url, {"description": "d" * 256}), 400, "EG.00513000")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Orders", "channel_id": CHANNEL_ID}, "name"),
        ({"name": "hc.orders", "channel_id": CHANNEL_ID}, "name"),
        ({"name": "-orders", "channel_id": CHANNEL_ID}, "name"),
        ({"name": "a" * 129, "channel_id": CHANNEL_ID}, "name"),
        ({"channel_id": CHANNEL_ID}, "name"),
        ({"name": "ok", "channel_id": CHANNEL_ID, "description": "d" * 256}, "description"),
        ({"name": "ok", "channel_id": CHANNEL_ID, "type": "KAFKA"}, "type"),
        ({"name": "ok", "channel_id": CHANNEL_ID, "detail": ["not", "object"]}, "detail"),
        ({"name": "ok"}, "channel_id"),
        (["not an object"], "body"),
    ],
)
async def test_create_source_validation_names_the_field(api: Api, body: Any, field: str) -> None:
    reply = await api.call("POST", f"{P}/sources", body)
    assert_error(reply, 400, "EG.00513000")
    assert field in reply.body["error_msg"]


async def test_create_source_reports_every_bad_field_at_once(api: Api) -> None:
    reply = await api.call("POST", f"{P}/sources", {"name": "BAD", "type": "X"})
    assert_error(reply, 400, "EG.00513000")
    for field in ("name", "type", "channel_id"):
        assert field in reply.body["error_msg"]


async def test_longest_valid_names_and_dots_are_accepted(api: Api) -> None:
    assert (await api.source("a" * 128))["name"] == "a" * 128
    assert (await api.source("0rders.v1_x-y"))["label"] == "0rders.v1_x-y"


async def test_unusable_channel_and_duplicate_name(api: Api) -> None:
    official = default_channel_id(DEFAULT_PROJECT_ID)
    for channel_id in (official, "no-such-channel"):
        reply = await api.call("POST", f"{P}/sources", {"name": "s", "channel_id": channel_id})
        assert_error(reply, 400, "EG.00513005")
    await api.source("dup")
    reply = await api.call("POST", f"{P}/sources", {"name": "dup", "channel_id": OTHER_CHANNEL_ID})
    assert_error(reply, 400, "EG.00513001")


async def test_list_sources_paging_and_filters(api: Api) -> None:
    for name in ("alpha", "beta", "alphabet", "gamma", "delta"):
        await api.source(name, channel_id=OTHER_CHANNEL_ID if name == "gamma" else CHANNEL_ID)
    first = await api.call("GET", f"{P}/sources", params={"limit": "2"})
    assert (first.body["total"], first.body["size"]) == (5, 2)
    assert [s["name"] for s in first.body["items"]] == ["delta", "gamma"]  # newest first
    last = await api.call("GET", f"{P}/sources", params={"limit": "2", "offset": "4"})
    assert [s["name"] for s in last.body["items"]] == ["alpha"]
    assert last.body["size"] == 1
    past = await api.call("GET", f"{P}/sources", params={"offset": "5"})
    assert_error(past, 400, "APIGW.0106")

    exact = await api.call("GET", f"{P}/sources", params={"name": "alpha"})
    assert [s["name"] for s in exact.body["items"]] == ["alpha"]
    fuzzy = await api.call(
        "GET", f"{P}/sources", params={"fuzzy_name": "alpha", "sort": "name:ASC"}
    )
    assert [s["name"] for s in fuzzy.body["items"]] == ["alpha", "alphabet"]
    by_channel = await api.call("GET", f"{P}/sources", params={"channel_id": OTHER_CHANNEL_ID})
    assert [s["name"] for s in by_channel.body["items"]] == ["gamma"]
    none = await api.call("GET", f"{P}/sources", params={"name": "missing", "offset": "0"})
    assert (none.status, none.body) == (200, {"total": 0, "size": 0, "items": []})


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"offset": "-1"},
        {"offset": "x"},
        {"sort": "id:UP"},
        {"provider_type": "SYSTEM"},
    ],
)
async def test_list_sources_rejects_bad_query(api: Api, params: dict[str, str]) -> None:
    assert_error(await api.call("GET", f"{P}/sources", params=params), 400, "EG.00513000")


async def test_quota_of_five_rabbitmq_sources(api: Api) -> None:
    for i in range(5):
        await api.source(f"rabbit-{i}", type="RABBITMQ")
    reply = await api.call(
        "POST", f"{P}/sources", {"name": "rabbit-5", "channel_id": CHANNEL_ID, "type": "RABBITMQ"}
    )
    assert_error(reply, 403, "EG.00514003")
    assert (await api.source("rocket-0", type="ROCKETMQ"))["type"] == "ROCKETMQ"
    assert (await api.source("app-0"))["type"] == "APPLICATION"


async def test_channels_are_seeded_and_managed(api: Api) -> None:
    listed = await api.call("GET", f"{P}/channels", params={"sort": "name:ASC"})
    assert [(c["name"], c["provider_type"]) for c in listed.body["items"]] == [
        ("billing", "CUSTOM"),
        ("default", "OFFICIAL"),
        ("orders", "CUSTOM"),
    ]
    official = default_channel_id(DEFAULT_PROJECT_ID)
    got = await api.call("GET", f"{P}/channels/{official}")
    assert set(got.body) >= {
        "id",
        "name",
        "description",
        "provider_type",
        "created_time",
        "updated_time",
        "enterprise_project_id",
    }
    assert_error(await api.call("DELETE", f"{P}/channels/{official}"), 403, "EG.00514004")
    assert_error(await api.call("PUT", f"{P}/channels/{official}", {}), 403, "EG.00514004")

    created = await api.call("POST", f"{P}/channels", {"name": "Audit.Log", "description": "a"})
    assert created.status == 200
    assert created.body["provider_type"] == "CUSTOM"
    url = f"{P}/channels/{created.body['id']}"
    assert (await api.call("PUT", url, {"description": "b"})).body["description"] == "b"
    assert_error(await api.call("POST", f"{P}/channels", {"name": "Audit.Log"}), 400, "EG.00513001")
    assert (await api.call("DELETE", url)).status == 204
    assert_error(await api.call("GET", url), 404, "EG.00014040")

    await api.source("user")
    assert_error(await api.call("DELETE", f"{P}/channels/{CHANNEL_ID}"), 403, "EG.00514004")


@pytest.mark.parametrize("name", ["default", "_x", "a b", "a" * 129, ""])
async def test_create_channel_validation(api: Api, name: str) -> None:
    reply = await api.call("POST", f"{P}/channels", {"name": name})
    assert_error(reply, 400, "EG.00513000")
    assert "name" in reply.body["error_msg"]


async def test_channel_quota_is_ten_custom_channels(api: Api) -> None:
    for i in range(8):  # two CUSTOM channels are pre-seeded
        assert (await api.call("POST", f"{P}/channels", {"name": f"c{i}"})).status == 200
    assert_error(await api.call("POST", f"{P}/channels", {"name": "c8"}), 403, "EG.00514003")


async def test_unknown_project_is_404(api: Api) -> None:
    for path in ("/sources", "/channels", f"/channels/{CHANNEL_ID}/events"):
        method = "POST" if path.endswith("events") else "GET"
        body: Any = {"events": []} if method == "POST" else None
        assert_error(await api.call(method, f"/v1/ffff{path}", body), 404, "EG.00014040")


async def test_token_auth() -> None:
    async with running(auth="token", tokens=["tok-1", "tok-2"]) as api:
        for headers in ({}, {"X-Auth-Token": "wrong"}):
            reply = await api.call("GET", f"{P}/sources", headers=headers)
            assert_error(reply, 401, "APIGW.0301")
            assert reply.body["error_msg"].startswith("Incorrect IAM authentication information: ")
        ok = await api.call("GET", f"{P}/sources", headers={"X-Auth-Token": "tok-2"})
        assert ok.status == 200
        assert (await api.call("GET", "/emulator/events")).status == 200
        assert (await api.call("GET", "/emulator/stats")).body["auth_failures"] == 2


async def test_request_id_on_every_response(api: Api) -> None:
    replies = [
        await api.call("GET", f"{P}/sources"),
        await api.call("POST", f"{P}/sources", {"name": "BAD"}),
        await api.call("POST", f"{P}/sources", data=b"{not json"),
        await api.call("GET", "/no/such/route"),
        await api.call("PATCH", f"{P}/sources"),
        await api.call("DELETE", "/emulator/events"),
        await api.call("GET", "/emulator/health"),
    ]
    ids = [r.headers.get("X-Request-Id") for r in replies]
    assert all(ids)
    assert len(set(ids)) == len(ids)
    assert all(r.body is None or r.status < 400 or "error_code" in r.body for r in replies)
    assert replies[3].status == 404
    assert replies[4].status == 405


async def test_invalid_json_is_400_not_500(api: Api) -> None:
    for path in (
        f"{P}/sources",
        f"{P}/channels",
        f"{P}/channels/{CHANNEL_ID}/events",
        "/emulator/faults",
    ):
        assert_error(await api.call("POST", path, data=b"{oops"), 400, "EG.00014000")
    assert_error(await api.call("POST", f"{P}/sources", data=b""), 400, "EG.00014000")


async def test_source_status_endpoint(api: Api) -> None:
    src = await api.source("mq")
    info = {"error_code": "EG.00512003", "error_msg": "agency missing", "error_detail": "x"}
    reply = await api.call(
        "POST", f"/emulator/sources/{src['id']}/status", {"status": "ERROR", "error_info": info}
    )
    assert (reply.status, reply.body["status"], reply.body["error_info"]) == (200, "ERROR", info)
    got = (await api.call("GET", f"{P}/sources/{src['id']}")).body
    assert (got["status"], got["error_info"]) == ("ERROR", info)
    back = await api.call("POST", f"/emulator/sources/{src['id']}/status", {"status": "RUNNING"})
    assert (back.body["status"], back.body["error_info"]) == ("RUNNING", {})
    bad = await api.call("POST", f"/emulator/sources/{src['id']}/status", {"status": "CREATING"})
    assert_error(bad, 400, "EG.00513000")
    assert_error(
        await api.call("POST", "/emulator/sources/nope/status", {"status": "ERROR"}),
        404,
        "EG.00014040",
    )


def test_create_app_rejects_bad_config() -> None:
    with pytest.raises(ConfigError) as info:
        create_app(EmulatorConfig(channels={"default": "x", "ok": ""}, auth="kerberos"))
    assert len(info.value.problems) == 3


async def test_run_emulator_serves_until_sigterm(capfd: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(run_emulator(EmulatorConfig(port=0)))
    err = ""
    for _ in range(200):
        await asyncio.sleep(0.01)
        err += capfd.readouterr().err
        if "listening on" in err:
            break
    url = re.search(r"listening on (\S+)", err)
    assert url, err
    async with aiohttp.ClientSession() as session, session.get(url[1] + "/emulator/health") as r:
        assert r.status == 200
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 5)  # returns normally: exit status 0
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session:
            await session.get(url[1] + "/emulator/health")


async def test_unexpected_exception_is_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    app = create_app(EmulatorConfig())
    app.router.add_get("/v1/{project_id}/boom", boom)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        resp = await session.get(server.make_url(f"{P}/boom"))
        body = await resp.json()
    assert resp.status == 500
    assert body["error_code"] == "EG.00015000"
    assert body["request_id"] == resp.headers["X-Request-Id"]
    assert any(r.exc_info and "bug" in str(r.exc_info[1]) for r in caplog.records)
