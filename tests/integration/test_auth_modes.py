"""The bridge as a process against the emulator in each auth mode (issue 3, design §7):
a static token, IAM password tokens (surviving several expiries during a run) and AK/SK
signatures. Real RabbitMQ, real HTTP, real ``eg-bridge run``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.emulator import EmulatorConfig, start_emulator
from tests.support.amqp import declare_queue, publish_json
from tests.support.bridge import CHANNEL_ID, BridgeProcess, Emulator, bridge_config, status_port
from tests.support.rabbit import RabbitServer

pytestmark = pytest.mark.integration

IAM_PASSWORD = "Iam-Pa55word!"
AK, SK = "AKINTEGRATION0000001", "SKintegration/secret+0000000000000000001"
MODES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # mode: (emulator config, eventgrid.auth of the bridge; the IAM endpoint is the emulator)
    "token": ({"auth": "token", "tokens": ["static-token-0001"]},
              {"token": "static-token-0001"}),
    "iam": ({"auth": "token", "iam_users": {"acme/bridge": IAM_PASSWORD}},
            {"iam": {"domain": "acme", "user": "bridge",
                     "password": IAM_PASSWORD, "project": "cn-north-4"}}),
    "aksk": ({"auth": "aksk", "access_keys": {AK: SK}},
             {"aksk": {"access_key": AK, "secret_key": SK}}),
}




class Stack:
    """An emulator in one auth mode plus a helper to start bridges against it."""

    def __init__(self, url: str, mode: str, tmp_path: Path, rabbit: RabbitServer,
                 bridges: list[BridgeProcess]) -> None:
        self.emulator = Emulator(url)
        self.mode, self.tmp_path, self.rabbit, self.bridges = mode, tmp_path, rabbit, bridges

    def bridge(self, queue: str, source: str, **auth_fields: str) -> BridgeProcess:
        """Start a bridge in this mode; ``auth_fields`` override fields of its auth block."""
        cfg = bridge_config(emulator_url=self.emulator.url, rabbit_address=self.rabbit.address,
                            queue=queue, source_name=source, status_port=status_port())
        ((key, fields),) = MODES[self.mode][1].items()
        if isinstance(fields, dict):
            fields = {**fields, **auth_fields}
            if self.mode == "iam":
                fields["endpoint"] = self.emulator.url
        cfg["eventgrid"]["auth"] = {key: fields}
        bridge = BridgeProcess(self.tmp_path, cfg)
        self.bridges.append(bridge)
        bridge.start()
        return bridge


@pytest.fixture
async def stack(request: pytest.FixtureRequest, tmp_path: Path, rabbit: RabbitServer,
                bridges: list[BridgeProcess]) -> AsyncIterator[Stack]:
    mode, ttl = request.param
    server = await start_emulator(EmulatorConfig(
        port=0, channels={"test": CHANNEL_ID}, token_ttl_s=ttl, **MODES[mode][0]))
    try:
        yield Stack(server.url, mode, tmp_path, rabbit, bridges)
    finally:
        await server.close()




def total(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix))


async def wait_queue_empty(rabbit: RabbitServer, queue: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if rabbit.queue_counts(queue) == (0, 0):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"queue {queue} not empty: {rabbit.queue_counts(queue)}")


@pytest.mark.parametrize("stack", [("token", 3600), ("iam", 3600), ("aksk", 3600)],
                         indirect=True, ids=["token", "iam", "aksk"])
async def test_bridge_delivers_in_each_auth_mode(
    stack: Stack, rabbit: RabbitServer, queue_name: str, source_name: str
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    ids = await publish_json(rabbit.amqp_url, queue_name, [{"n": i} for i in range(300)])
    bridge = stack.bridge(queue_name, source_name)
    await bridge.wait_ready()
    assert await stack.emulator.wait_total(300, source_name) == 300
    await wait_queue_empty(rabbit, queue_name)
    assert {e["id"] for e in await stack.emulator.events(source_name)} == set(ids)
    values = await bridge.metrics()
    assert total(values, "eg_bridge_publish_failures_total") == 0
    stats = await stack.emulator.stats()
    assert stats["auth_failures"] == 0
    assert stats["iam_token_requests"] == (1 if stack.mode == "iam" else 0)
    for secret in (IAM_PASSWORD, SK, "static-token-0001"):
        assert secret not in bridge.log()


@pytest.mark.parametrize("stack", [("iam", 3)], indirect=True, ids=["iam-3s-tokens"])
async def test_iam_tokens_expire_during_a_run_and_nothing_is_lost(
    stack: Stack, rabbit: RabbitServer, queue_name: str, source_name: str
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    bridge = stack.bridge(queue_name, source_name)
    await bridge.wait_ready()
    ids: list[str | None] = []
    deadline = time.monotonic() + 12
    batch = 0
    while time.monotonic() < deadline:  # ~12 s of traffic: four 3 s token lifetimes
        ids += await publish_json(rabbit.amqp_url, queue_name,
                                  [{"batch": batch, "n": i} for i in range(10)])
        batch += 1
        await asyncio.sleep(0.1)
    assert await stack.emulator.wait_total(len(ids), source_name) >= len(ids)
    await wait_queue_empty(rabbit, queue_name)
    assert {e["id"] for e in await stack.emulator.events(source_name)} == set(ids)
    values = await bridge.metrics()
    assert values.get('eg_bridge_publish_failures_total{reason="auth"}', 0) == 0
    assert total(values, "eg_bridge_publish_failures_total") == 0
    assert total(values, "eg_bridge_dead_lettered_total") == 0
    stats = await stack.emulator.stats()
    assert stats["auth_failures"] == 0, stats  # a healthy run sees no 401 (design §7)
    assert stats["iam_token_requests"] >= 4, stats  # refreshed through several expiries
    assert IAM_PASSWORD not in bridge.log()
    status = await bridge.get_json("/status")
    assert status["state"] == "RUNNING"


@pytest.mark.parametrize("stack", [("iam", 3600)], indirect=True, ids=["iam"])
async def test_wrong_iam_password_is_reported_not_crashed(
    stack: Stack, rabbit: RabbitServer, queue_name: str, source_name: str
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    bridge = stack.bridge(queue_name, source_name, password="wrong-password-123")
    deadline = time.monotonic() + 20
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status = await bridge.get_json("/status")
        except aiohttp.ClientError:
            status = {}
        if status.get("last_error"):
            break
        await asyncio.sleep(0.2)
    assert status["state"] == "ERROR", status
    assert "The username or password is wrong." in status["last_error"]["message"]
    assert "eventgrid.auth.iam" in status["last_error"]["message"]
    ready = await bridge.get_json("/readyz")
    assert ready["ready"] is False
    assert bridge.proc is not None
    assert bridge.proc.poll() is None  # reported, retried slowly, never a crash
    assert "wrong-password-123" not in bridge.log()
    assert (await stack.emulator.stats())["api_requests"] == 0
