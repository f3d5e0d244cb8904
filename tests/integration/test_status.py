"""Status reporting against a running bridge: readiness that tells the truth, metrics that
match what EG received, the EG source's own status, and no secret anywhere (issue 4)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.emulator import EmulatorConfig, start_emulator
from tests.support.amqp import declare_queue, publish_json, publish_raw
from tests.support.bridge import (
    CHANNEL_ID,
    BridgeProcess,
    Emulator,
    bridge_config,
    status_port,
)
from tests.support.rabbit import RabbitServer, free_port

pytestmark = pytest.mark.integration
TOKEN = "tok-ABC123"
PASSWORD = "S3cr3t!x"
AK, SK = "AKSECRETPAIR0001", "SKSECRETPAIRVALUE0001"




def start_bridge(tmp_path: Path, bridges: list[BridgeProcess], emulator_url: str,
                 address: str, queue: str, **overrides: Any) -> BridgeProcess:
    cfg = bridge_config(emulator_url=emulator_url, rabbit_address=address, queue=queue,
                        source_name=f"st-{uuid.uuid4().hex[:8]}", status_port=status_port(),
                        overrides=overrides)
    bridge = BridgeProcess(tmp_path, cfg)
    bridges.append(bridge)
    bridge.start()
    return bridge


async def readyz(bridge: BridgeProcess) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(bridge.status_url + "/readyz") as r:
        return r.status, await r.json()


async def wait_readyz(bridge: BridgeProcess, want: int, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            status, _ = await readyz(bridge)
        except aiohttp.ClientError:
            status = 0
        if status == want:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"/readyz never answered {want} in {timeout_s}s:\n{bridge.log()[-3000:]}")




async def test_readiness_follows_the_broker_and_nothing_confirmed_is_lost(
    rabbit_factory: Any, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    broker: RabbitServer = rabbit_factory()
    await declare_queue(broker.amqp_url, queue_name)
    before = await publish_json(broker.amqp_url, queue_name, [{"n": i} for i in range(200)])
    bridge = start_bridge(tmp_path, bridges, emulator.url, broker.address, queue_name)
    await bridge.wait_ready()
    await emulator.wait_total(200)

    await asyncio.to_thread(broker.stop)
    took = await wait_readyz(bridge, 503, 10)
    status = await bridge.get_json("/status")
    assert status["state"] == "ERROR"
    assert status["consumer"]["connected"] is False
    assert "consumer" in status["reason"]
    assert took < 10

    await asyncio.to_thread(broker.start)
    await wait_readyz(bridge, 200, 30)
    after = await publish_json(broker.amqp_url, queue_name, [{"m": i} for i in range(200)])
    assert await emulator.wait_total(400, timeout_s=30) >= 400
    got = {e["id"] for e in await emulator.events()}
    assert set(before) | set(after) <= got
    assert (await bridge.get_json("/status"))["state"] == "RUNNING"


async def test_metrics_match_the_emulator_and_count_dead_letters(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    await publish_json(rabbit.amqp_url, queue_name, [{"n": i} for i in range(300)])
    await publish_raw(rabbit.amqp_url, queue_name, b"x" * (100 * 1024),
                      content_type="text/plain", message_id="too-big")
    bridge = start_bridge(tmp_path, bridges, emulator.url, rabbit.address, queue_name)
    await emulator.wait_total(300)
    await asyncio.sleep(1)
    m = await bridge.metrics()
    assert m["eg_bridge_events_published_total"] == await emulator.total() == 300
    assert m["eg_bridge_messages_received_total"] == 301
    assert m['eg_bridge_dead_lettered_total{reason="event_too_large"}'] == 1
    for reason in ("event_too_large", "eg_rejected", "unconvertible"):
        assert f'eg_bridge_dead_lettered_total{{reason="{reason}"}}' in m
    for reason in ("timeout", "network", "throttled", "server_error", "auth", "forbidden",
                   "not_found", "bad_request"):
        assert f'eg_bridge_publish_failures_total{{reason="{reason}"}}' in m
    assert m["eg_bridge_consumer_connected"] == 1
    assert m['eg_bridge_source_status{status="RUNNING"}'] == 1
    assert m["eg_bridge_publish_duration_seconds_count"] >= 15
    assert m["eg_bridge_in_flight_messages"] == 0
    assert "x" * 100 not in bridge.log()  # the body is never logged


@pytest.mark.parametrize("mode", ["token", "aksk"])
async def test_no_secret_in_logs_status_or_metrics(
    mode: str, rabbit: RabbitServer, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    emulator_auth: dict[str, Any] = (
        {"auth": "token", "tokens": [TOKEN]} if mode == "token"
        else {"auth": "aksk", "access_keys": {AK: SK}})
    auth = {"token": TOKEN} if mode == "token" else {"aksk": {"access_key": AK, "secret_key": SK}}
    server = await start_emulator(EmulatorConfig(port=0, channels={"test": CHANNEL_ID},
                                                 **emulator_auth))
    try:
        bridge = start_bridge(
            tmp_path, bridges, server.url, rabbit.address, queue_name,
            eventgrid={"auth": auth},
            source={"detail": {"user_name": "bridgeuser", "password": PASSWORD,
                               "vhost_name": "/", "queue_name": queue_name,
                               "access_key": AK, "secret_key": SK}},
            logging={"format": "json", "level": "debug"},
        )
        deadline = time.monotonic() + 20
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:  # the broker refuses the unknown user
            try:
                status = await bridge.get_json("/status")
            except aiohttp.ClientError:
                status = {}
            if status.get("last_error") and status.get("source", {}).get("id"):
                break
            await asyncio.sleep(0.3)
        code, ready = await readyz(bridge)
        text = str(status) + str(ready) + str(await bridge.metrics())
        bridge.terminate()
        assert await bridge.wait_exit() == 0
    finally:
        await server.close()
    assert code == 503
    assert status["state"] == "ERROR"
    assert status["source"]["id"]  # EG accepted the credentials: the source is registered
    assert "cannot connect to RabbitMQ" in status["last_error"]["message"]
    log = bridge.log()
    for secret in (PASSWORD, TOKEN, AK, SK):
        assert secret not in log
        assert secret not in text
    assert f"amqp://bridgeuser:***@{rabbit.address}/" in log
    assert '"level": "debug"' in log  # debug lines were written and checked too


async def test_source_status_from_eg_is_shown(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    bridge = start_bridge(tmp_path, bridges, emulator.url, rabbit.address, queue_name,
                          status={"status_poll_s": 0.5})
    await bridge.wait_ready()
    source_id = (await bridge.get_json("/status"))["source"]["id"]
    info = {"error_code": "EG.00512003", "error_msg": "agency missing",
            "error_detail": "EG_AGENCY is not granted"}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{emulator.url}/emulator/sources/{source_id}/status",
                               json={"status": "ERROR", "error_info": info})
        assert resp.status == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = await bridge.get_json("/status")
        if status["source"]["status"] == "ERROR":
            break
        await asyncio.sleep(0.2)
    assert status["source"]["error_info"] == info
    m = await bridge.metrics()
    assert m['eg_bridge_source_status{status="ERROR"}'] == 1
    assert m['eg_bridge_source_status{status="RUNNING"}'] == 0


async def test_source_deleted_behind_its_back_is_recreated(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    bridge = start_bridge(tmp_path, bridges, emulator.url, rabbit.address, queue_name,
                          status={"status_poll_s": 60})
    await bridge.wait_ready()
    status = await bridge.get_json("/status")
    old_id, name = status["source"]["id"], status["source"]["name"]
    url = f"{emulator.url}/v1/0123456789abcdef0123456789abcdef/sources/{old_id}"
    async with aiohttp.ClientSession() as http:
        assert (await http.delete(url)).status == 204
    # The next publish fails fatally (unknown source): the bridge re-creates at once.
    ids = await publish_json(rabbit.amqp_url, queue_name, [{"after": "delete"}])
    assert await emulator.wait_total(1, name, timeout_s=30) == 1
    assert {e["id"] for e in await emulator.events(name)} == set(ids)
    new = await bridge.get_json("/status")
    assert new["source"]["id"] != old_id
    assert "source deleted behind the bridge's back, re-creating" in bridge.log()
    assert new["state"] == "RUNNING"


@pytest.mark.parametrize("case", ["wrong_channel", "status_port_taken"])
async def test_misconfiguration_is_explained(
    case: str, rabbit: RabbitServer, emulator: Emulator, queue_name: str, tmp_path: Path,
    bridges: list[BridgeProcess],
) -> None:
    if case == "wrong_channel":
        bridge = start_bridge(tmp_path, bridges, emulator.url, rabbit.address, queue_name,
                              source={"channel_id": "00000000-0000-0000-0000-00000000dead"})
        await asyncio.sleep(2)
        code, ready = await readyz(bridge)
        status = await bridge.get_json("/status")
        assert code == 503
        assert status["state"] == "ERROR"
        assert "EG.00513005" in ready["reason"]
        assert status["last_error"]["error_code"] == "EG.00513005"
    else:
        port = free_port()
        blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
        try:
            cfg = bridge_config(emulator_url=emulator.url, rabbit_address=rabbit.address,
                                queue=queue_name, source_name="taken", status_port=port)
            bridge = BridgeProcess(tmp_path, cfg)
            bridges.append(bridge)
            bridge.start()
            assert await bridge.wait_exit(20) == 1
            assert "could not start" in bridge.log()
        finally:
            blocker.close()
