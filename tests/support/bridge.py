"""Run ``eg-bridge run`` as a real process against a RabbitMQ node and an emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.rabbit import free_port

CHANNEL_ID = "11111111-2222-3333-4444-555555555555"
PROJECT_ID = "0123456789abcdef0123456789abcdef"


def bridge_config(
    *,
    emulator_url: str,
    rabbit_address: str,
    queue: str,
    source_name: str,
    status_port: int,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A config dict for one test; ``overrides`` is merged two levels deep per section
    (``eventgrid.auth`` is replaced whole: it holds exactly one mode)."""
    config: dict[str, Any] = {
        "eventgrid": {
            "endpoint": emulator_url,
            "project_id": PROJECT_ID,
            "auth": {"none": True},
            "request_timeout_s": 5,
        },
        "source": {
            "name": source_name,
            "description": "test source",
            "channel_id": CHANNEL_ID,
            "type": "RABBITMQ",
            "detail": {
                "user_name": "guest",
                "password": "guest",
                "vhost_name": "/",
                "queue_name": queue,
            },
            "connection": {"address": rabbit_address, "prefetch": 200, "reconnect_interval_s": 1},
        },
        "forwarding": {
            "event_type": "com.example.test",
            "shutdown_grace_s": 10,
            "retry": {"initial_backoff_s": 0.1, "max_backoff_s": 2},
        },
        "status": {"listen": f"127.0.0.1:{status_port}", "status_poll_s": 60},
        "logging": {"format": "json", "level": "info"},
    }
    for section, values in (overrides or {}).items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            for key, value in values.items():
                if key != "auth" and isinstance(value, dict) and isinstance(
                        config[section].get(key), dict):
                    config[section][key] = {**config[section][key], **value}
                else:
                    config[section][key] = value
        else:
            config[section] = values
    return config


class BridgeProcess:
    """``python -m bridge run -c FILE`` with stderr captured to a file.

    Args:
        workdir: where the config and log files go.
        config: the config dict (written as YAML).
        env: extra environment variables.
    """

    def __init__(
        self, workdir: Path, config: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.config_path = workdir / f"bridge-{id(self)}.yaml"
        self.config_path.write_text(yaml.safe_dump(dict(config)))
        self.log_path = workdir / f"bridge-{id(self)}.log"
        self.status_url = "http://" + config["status"]["listen"]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch the process."""
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "-c", str(self.config_path)],
            stdout=self._log,
            stderr=self._log,
            env=self.env,
            start_new_session=True,
        )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Poll /readyz until 200. Raises AssertionError with the log tail on timeout."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"bridge exited {self.proc.returncode}:\n{self.log()}")
                try:
                    async with http.get(self.status_url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"bridge not ready after {timeout_s}s:\n{self.log()[-4000:]}")

    async def get_json(self, path: str) -> Any:
        """GET a status endpoint and return its JSON."""
        async with aiohttp.ClientSession() as http, http.get(self.status_url + path) as resp:
            return await resp.json()

    async def metrics_text(self) -> str:
        """The Prometheus text of /metrics."""
        async with aiohttp.ClientSession() as http, http.get(self.status_url + "/metrics") as r:
            return await r.text()

    async def metrics(self) -> dict[str, float]:
        """/metrics as ``{'name{labels}': value}``."""
        values: dict[str, float] = {}
        for line in (await self.metrics_text()).splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def terminate(self) -> None:
        """Send SIGTERM."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to end; return its exit code."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge still running after {timeout_s}s")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL if still running (fixture clean-up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Emulator:
    """Client for the emulator's inspection and fault API (design §9)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, **kw) as resp,
        ):
            assert resp.status < 300, f"{method} {path}: {resp.status} {await resp.text()}"
            return await resp.json() if resp.status != 204 else None

    async def events(self, source: str | None = None, limit: int = 1_000_000) -> list[Any]:
        """Every stored event (the ``event`` objects), oldest first."""
        params = {"limit": str(limit)}
        if source:
            params["source"] = source
        data = await self._call("GET", "/emulator/events", params=params)
        return [row["event"] for row in data["events"]]

    async def total(self, source: str | None = None) -> int:
        """How many events are stored (for ``source``)."""
        params = {"limit": "0"}
        if source:
            params["source"] = source
        return int((await self._call("GET", "/emulator/events", params=params))["total"])

    async def wait_total(self, n: int, source: str | None = None, timeout_s: float = 60.0) -> int:
        """Poll until at least ``n`` events are stored; return the count seen last."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            seen = await self.total(source)
            if seen >= n:
                return seen
            await asyncio.sleep(0.1)
        return seen

    async def fault(self, **body: Any) -> str:
        """Add a fault (design §9); returns its id."""
        return str((await self._call("POST", "/emulator/faults", json=body))["id"])

    async def clear_faults(self) -> None:
        """Remove every fault."""
        await self._call("DELETE", "/emulator/faults")

    async def stats(self) -> dict[str, Any]:
        """Request counters."""
        result: dict[str, Any] = await self._call("GET", "/emulator/stats")
        return result


def status_port() -> int:
    """A free TCP port for the bridge's status server."""
    return free_port()
