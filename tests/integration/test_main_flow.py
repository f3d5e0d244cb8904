"""The main job end to end: a real RabbitMQ node, the emulator as a real HTTP server, and
``eg-bridge run`` as a real process (issue 2)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.amqp import declare_queue, publish_json, publish_raw
from tests.support.bridge import (
    BridgeProcess,
    Emulator,
    bridge_config,
    status_port,
)
from tests.support.rabbit import RabbitServer

pytestmark = pytest.mark.integration





def make_bridge(tmp_path: Path, bridges: list[BridgeProcess], emulator: Emulator,
                rabbit: RabbitServer, queue: str, source: str, **overrides: Any) -> BridgeProcess:
    cfg = bridge_config(emulator_url=emulator.url, rabbit_address=rabbit.address, queue=queue,
                        source_name=source, status_port=status_port(), overrides=overrides)
    bridge = BridgeProcess(tmp_path, cfg)
    bridges.append(bridge)
    bridge.start()
    return bridge


async def wait_queue_empty(rabbit: RabbitServer, queue: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if rabbit.queue_counts(queue) == (0, 0):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"queue {queue} not empty: {rabbit.queue_counts(queue)}")


async def test_10000_json_messages_arrive_exactly_once(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, source_name: str,
    tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    payloads = [{"order": i, "item": f"sku-{i % 97}"} for i in range(10_000)]
    ids = await publish_json(rabbit.amqp_url, queue_name, payloads)
    bridge = make_bridge(tmp_path, bridges, emulator, rabbit, queue_name, source_name)
    await bridge.wait_ready()
    assert await emulator.wait_total(10_000, source_name, timeout_s=90) >= 10_000
    await wait_queue_empty(rabbit, queue_name)
    await asyncio.sleep(1)  # anything extra would show up now
    events = await emulator.events(source_name)
    assert len(events) == 10_000
    by_id = {e["id"]: e for e in events}
    assert set(by_id) == set(ids)
    for message_id, payload in zip(ids, payloads, strict=True):
        event = by_id[message_id]
        assert event["source"] == source_name
        assert event["data"] == payload
        assert event["datacontenttype"] == "application/json"
    status = await bridge.get_json("/status")
    assert status["state"] == "RUNNING"
    assert status["counters"]["events_published"] == 10_000


async def test_text_and_binary_messages_are_wrapped(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, source_name: str,
    tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    await publish_raw(rabbit.amqp_url, queue_name, "héllo wörld".encode(),
                      content_type="text/plain", message_id="text-1")
    binary = bytes(range(256))
    await publish_raw(rabbit.amqp_url, queue_name, binary,
                      content_type="application/octet-stream", message_id="bin-1")
    make_bridge(tmp_path, bridges, emulator, rabbit, queue_name, source_name)
    assert await emulator.wait_total(2, source_name) == 2
    events = {e["id"]: e for e in await emulator.events(source_name)}
    assert events["text-1"]["data"] == {"text": "héllo wörld"}
    assert events["text-1"]["contenttype"] == "text/plain"
    assert events["bin-1"]["data"] == {"base64": base64.b64encode(binary).decode()}
    await wait_queue_empty(rabbit, queue_name)


async def test_first_five_publishes_fail_503_and_everything_arrives(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, source_name: str,
    tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    await emulator.fault(path="events", status=503, count=5)
    ids = await publish_json(rabbit.amqp_url, queue_name, [{"n": i} for i in range(500)])
    bridge = make_bridge(tmp_path, bridges, emulator, rabbit, queue_name, source_name)
    assert await emulator.wait_total(500, source_name, timeout_s=60) == 500
    await wait_queue_empty(rabbit, queue_name)
    assert {e["id"] for e in await emulator.events(source_name)} == set(ids)
    metrics = await bridge.metrics()
    assert metrics['eg_bridge_publish_failures_total{reason="server_error"}'] >= 5
    assert sum(v for k, v in metrics.items() if k.startswith("eg_bridge_dead_lettered_total")) == 0
    retries = [json.loads(line) for line in bridge.log().splitlines()
               if '"publish failed, retrying"' in line]
    assert len(retries) >= 5
    assert all(r["reason"] == "server_error" for r in retries)


async def test_sigterm_while_flowing_loses_nothing(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, source_name: str,
    tmp_path: Path, bridges: list[BridgeProcess],
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    ids = await publish_json(rabbit.amqp_url, queue_name, [{"n": i} for i in range(5_000)])
    await emulator.fault(path="events", latency_ms=20)  # keep batches in flight
    bridge = make_bridge(tmp_path, bridges, emulator, rabbit, queue_name, source_name)
    await bridge.wait_ready()
    await emulator.wait_total(500, source_name, timeout_s=30)
    bridge.terminate()
    started = time.monotonic()
    assert await bridge.wait_exit(timeout_s=30) == 0
    assert time.monotonic() - started < 10 + 5  # shutdown_grace_s + closing
    delivered = {e["id"] for e in await emulator.events(source_name)}
    ready, unacked = rabbit.queue_counts(queue_name)
    assert unacked == 0
    assert 0 < len(delivered) < 5_000
    assert len(delivered) + ready >= 5_000  # none lost (duplicates allowed)
    assert "bridge stopped" in bridge.log()

    await emulator.clear_faults()
    again = make_bridge(tmp_path, bridges, emulator, rabbit, queue_name, source_name)
    await again.wait_ready()
    await wait_queue_empty(rabbit, queue_name, timeout_s=60)
    assert {e["id"] for e in await emulator.events(source_name)} == set(ids)


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=60,
        env=env, check=False,
    )


async def test_register_is_idempotent_and_updates_description(
    rabbit: RabbitServer, emulator: Emulator, queue_name: str, source_name: str,
    tmp_path: Path,
) -> None:
    cfg = bridge_config(emulator_url=emulator.url, rabbit_address=rabbit.address,
                        queue=queue_name, source_name=source_name, status_port=status_port())
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = await asyncio.to_thread(_run_cli, "register", "-c", str(path))
    second = await asyncio.to_thread(_run_cli, "register", "-c", str(path))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["id"] == b["id"]
    assert a["name"] == source_name
    assert a["description"] == "test source"
    cfg["source"]["description"] = "changed"
    path.write_text(yaml.safe_dump(cfg))
    third = await asyncio.to_thread(_run_cli, "register", "-c", str(path))
    c = json.loads(third.stdout)
    assert c["id"] == a["id"]
    assert c["description"] == "changed"


def test_bad_config_exits_2_naming_field_and_variable(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "eventgrid: {endpoint: 'http://127.0.0.1:1', project_id: p,"
        " auth: {token: '${NO_SUCH_VAR}'}}\n"
        "source:\n  name: Bad_Name\n  channel_id: c\n  type: RABBITMQ\n"
        "  detail: {user_name: u, password: 'S3cr3t!x', queue_name: q}\n"
    )
    for command in ("run", "check", "register"):
        result = _run_cli(command, "-c", str(path))
        assert result.returncode == 2
        assert "source.name" in result.stderr
        assert "NO_SUCH_VAR" in result.stderr
        assert "S3cr3t!x" not in result.stderr + result.stdout


