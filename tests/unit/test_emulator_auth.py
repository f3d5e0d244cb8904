"""The emulator's IAM endpoint, token lifetimes and auth configuration, over real HTTP
(shared/eg-api.md §2.1, design §4 emulator flags, §9)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import datetime
from typing import Any

import aiohttp
import orjson
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from bridge.cli import main
from bridge.emulator import DEFAULT_PROJECT_ID, EmulatorConfig, create_app
from bridge.errors import ConfigError
from bridge.eventgrid.auth import AkSkAuth
from tests.support.rabbit import free_port
from tests.unit.test_emulator import Api, P, assert_error, running

USER = {"name": "bridge", "password": "pw-1234", "domain": {"name": "acme"}}


def token_request(user: dict[str, Any] | None = None, scope: Any = None) -> dict[str, Any]:
    return {"auth": {
        "identity": {"methods": ["password"], "password": {"user": user or USER}},
        "scope": scope or {"project": {"name": "cn-north-4"}},
    }}


def parse_z(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_iam_issues_a_token_in_x_subject_token() -> None:
    async with running(auth="token", iam_users={"acme/bridge": "pw-1234"},
                       token_ttl_s=90) as api:
        reply = await api.call("POST", "/v3/auth/tokens", token_request())
        assert reply.status == 201
        token = reply.headers["X-Subject-Token"]
        body = reply.body["token"]
        lifetime = parse_z(body["expires_at"]) - parse_z(body["issued_at"])
        assert lifetime.total_seconds() == 90
        assert body["project"]["id"] == DEFAULT_PROJECT_ID
        assert body["user"]["name"] == "bridge"
        assert body["catalog"] == []
        assert token not in orjson.dumps(reply.body).decode()
        ok = await api.call("GET", f"{P}/sources", headers={"X-Auth-Token": token})
        assert ok.status == 200
        by_id = token_request(scope={"project": {"id": DEFAULT_PROJECT_ID}})
        assert (await api.call("POST", "/v3/auth/tokens", by_id)).status == 201
        stats = (await api.call("GET", "/emulator/stats")).body
        assert (stats["iam_token_requests"], stats["tokens_issued"]) == (2, 2)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (token_request({**USER, "password": "wrong"}), 401),
        (token_request({**USER, "domain": {"name": "other"}}), 401),
        (token_request({**USER, "name": "nobody"}), 401),
        (token_request(scope={"project": {"id": "f" * 32}}), 400),
        (token_request(scope={"domain": {"name": "acme"}}), 400),
        ({"auth": {"identity": {"methods": ["token"]}}}, 400),
        (None, 400),
    ],
)
async def test_iam_refuses_bad_requests(body: Any, status: int) -> None:
    async with running(auth="token", iam_users={"acme/bridge": "pw-1234"}) as api:
        reply = await (api.call("POST", "/v3/auth/tokens", body) if body is not None
                       else api.call("POST", "/v3/auth/tokens", data=b"{nope"))
        assert reply.status == status
        assert reply.body["error"]["code"] == status
        assert reply.body["error"]["message"]
        assert "X-Subject-Token" not in reply.headers
        if status == 401:
            assert reply.body["error"]["message"] == "The username or password is wrong."


async def auth_reason(api: Api, token: str) -> str:
    reply = await api.call("GET", f"{P}/sources", headers={"X-Auth-Token": token})
    assert_error(reply, 401, "APIGW.0301")
    return str(reply.body["error_msg"])


async def test_issued_tokens_expire_and_can_be_revoked() -> None:
    async with running(auth="token", tokens=["fixed-token"], token_ttl_s=0.5,
                       iam_users={"acme/bridge": "pw-1234"}) as api:
        first = (await api.call("POST", "/v3/auth/tokens", token_request())).headers
        await asyncio.sleep(0.6)
        reason = await auth_reason(api, first["X-Subject-Token"])
        assert reason.startswith("Incorrect IAM authentication information: token expires, "
                                 "expires_at: ")
        second = (await api.call("POST", "/v3/auth/tokens", token_request())).headers
        revoked = await api.call("DELETE", "/emulator/tokens")
        assert revoked.body == {"revoked": 2}
        reason = await auth_reason(api, second["X-Subject-Token"])
        assert reason == "Incorrect IAM authentication information: decrypt token fail"
        fixed = await api.call("GET", f"{P}/sources", headers={"X-Auth-Token": "fixed-token"})
        assert fixed.status == 200


async def test_iam_takes_faults_of_path_iam_only() -> None:
    async with running(auth="token", iam_users={"acme/bridge": "pw-1234"}) as api:
        await api.call("POST", "/emulator/faults", {"path": "*", "status": 500})
        assert (await api.call("POST", "/v3/auth/tokens", token_request())).status == 201
        await api.call("DELETE", "/emulator/faults")
        await api.call("POST", "/emulator/faults", {"path": "iam", "status": 503, "count": 1})
        assert (await api.call("POST", "/v3/auth/tokens", token_request())).status == 503
        assert (await api.call("POST", "/v3/auth/tokens", token_request())).status == 201


async def test_aksk_mode_ignores_tokens() -> None:
    async with running(auth="aksk", access_keys={"AK": "SK"}, tokens=["t"]) as api:
        reply = await api.call("GET", f"{P}/sources", headers={"X-Auth-Token": "t"})
        assert_error(reply, 401, "APIGW.0301")


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"auth": "aksk"}, "auth aksk needs at least one access key"),
        ({"iam_users": {"no-slash": "pw"}}, "must be DOMAIN/USER"),
        ({"token_ttl_s": 0}, "token ttl must be > 0"),
        ({"auth": "basic"}, "must be one of none, token, aksk"),
    ],
)
def test_bad_auth_config_is_refused(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        create_app(EmulatorConfig(**config))
    assert problem in str(err.value)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--auth", "aksk"], "--auth aksk needs at least one --ak/--sk pair"),
        (["--auth", "aksk", "--ak", "A"], "--ak and --sk come in pairs"),
        (["--auth", "token"], "--auth token needs at least one --token or --iam-user"),
        (["--iam-user", "acme/bridge"], "--iam-user: expected DOMAIN/USER:PASSWORD"),
    ],
)
def test_emulator_command_refuses_bad_flags(args: list[str], problem: str) -> None:
    result = CliRunner().invoke(main, ["emulator", *args])
    assert result.exit_code == 2
    assert problem in result.output


async def test_emulator_command_serves_iam_and_aksk() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "emulator", "--listen", f"127.0.0.1:{port}",
         "--auth", "aksk", "--ak", "AK1", "--sk", "SK1", "--ak", "AK2", "--sk", "SK2",
         "--iam-user", "acme/bridge:pw:with:colons", "--token-ttl", "30"],
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        assert proc.stderr is not None
        line = await asyncio.to_thread(proc.stderr.readline)
        assert b"listening on" in line, line
        async with aiohttp.ClientSession() as http:
            for ak, sk in (("AK1", "SK1"), ("AK2", "SK2")):
                auth = AkSkAuth(SecretStr(ak), SecretStr(sk), DEFAULT_PROJECT_ID)
                sources = f"{url}/v1/{DEFAULT_PROJECT_ID}/sources"
                headers = await auth.headers("GET", sources, b"")
                async with http.get(sources, headers=headers) as resp:
                    assert resp.status == 200
            user = {**USER, "password": "pw:with:colons"}
            async with http.post(url + "/v3/auth/tokens", json=token_request(user)) as resp:
                assert resp.status == 201
                body = await resp.json()
        lifetime = parse_z(body["token"]["expires_at"]) - parse_z(body["token"]["issued_at"])
        assert lifetime.total_seconds() == 30
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert code == 0
