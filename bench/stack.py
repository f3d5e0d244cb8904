"""The benchmark's own RabbitMQ node and EG emulator process, and the AMQP publishers.

The broker is a private node from Debian's ``rabbitmq-server`` (``tests.support.rabbit``); the
emulator runs as a separate process (``python -m bridge emulator``) so it never shares a CPU
time slice or an event loop with the process that measures. Backlogs are published confirmed
and persistent, as real producers do; latency runs publish at a fixed pace with the publish
time in each body (:func:`bench.stats.make_body`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from bench.stats import make_body
from tests.support.rabbit import NODE_MARK, RabbitServer, free_port

PROJECT_ID = "0123456789abcdef0123456789abcdef"
CHANNEL_ID = "b3c4e5f6-0000-4000-8000-000000000001"
QUEUE = "bench"
CONFIRM_WINDOW = 1000
"""Confirmed publishes awaited together while a backlog is published."""


def log(message: str) -> None:
    """A progress line on stderr, prefixed with the wall-clock time."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class EmulatorProcess:
    """``python -m bridge emulator`` on a free port with one CUSTOM channel; stderr to a file."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "emulator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The emulator's pid (it must be running)."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 20.0) -> None:
        """Launch and wait until ``/emulator/health`` answers."""
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "emulator", "--listen",
                 f"127.0.0.1:{self.port}", "--project-id", PROJECT_ID,
                 "--channel", f"bench={CHANNEL_ID}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        import urllib.request  # noqa: PLC0415 - blocking probe before any event loop runs

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/emulator/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"emulator not answering after {timeout_s}s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; idempotent."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Emulator:
    """Client for the emulator's control API (design §9) and the source API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Emulator:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        assert self._http is not None
        async with self._http.request(method, self.url + path, **kw) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {await resp.text()}")
            return None if resp.status == 204 else await resp.json(content_type=None)

    async def register_source(self, name: str) -> None:
        """Create an APPLICATION source on the bench channel (the naive bridge needs one)."""
        body = {"name": name, "channel_id": CHANNEL_ID, "type": "APPLICATION"}
        await self._call("POST", f"/v1/{PROJECT_ID}/sources", json=body)

    async def reset(self) -> None:
        """Forget stored events and counters (faults stay)."""
        await self._call("DELETE", "/emulator/events")
        await self._call("DELETE", "/emulator/stats")

    async def clear_events(self) -> None:
        """Forget stored events; the counters go on."""
        await self._call("DELETE", "/emulator/events")

    async def set_latency(self, latency_ms: int) -> None:
        """Replace every fault with ``latency_ms`` added to each PutEvents (0: none)."""
        await self._call("DELETE", "/emulator/faults")
        if latency_ms:
            await self._call("POST", "/emulator/faults",
                             json={"path": "events", "latency_ms": latency_ms})

    async def stats(self) -> dict[str, Any]:
        """The emulator's counters (``events_accepted``, ``put_events_requests``, ...)."""
        result: dict[str, Any] = await self._call("GET", "/emulator/stats")
        return result

    async def accepted(self) -> int:
        """Events accepted since the last :meth:`reset`."""
        return int((await self.stats())["events_accepted"])

    async def events(self, offset: int = 0, limit: int = 1000) -> tuple[int, list[Any]]:
        """``(total, records)``: stored records ``{received_at, channel_id, event}``."""
        data = await self._call("GET", "/emulator/events",
                                params={"offset": str(offset), "limit": str(limit)})
        return int(data["total"]), list(data["events"])

    async def all_events(self, page: int = 20000) -> list[Any]:
        """Every stored record, oldest first (paged)."""
        total, rows = await self.events(0, page)
        while len(rows) < total:
            _, more = await self.events(len(rows), page)
            if not more:
                break
            rows.extend(more)
        return rows

    async def first_last(self) -> tuple[int, Any, Any]:
        """``(total, first record, last record)`` without fetching everything."""
        total, first = await self.events(0, 1)
        if not total:
            return 0, None, None
        _, last = await self.events(total - 1, 1)
        return total, first[0], last[0]

    async def wait_accepted(
        self, target: int, *, stall_s: float = 20.0, poll_s: float = 0.1,
        alive: Callable[[], bool] = lambda: True,
    ) -> int:
        """Poll until ``target`` events were accepted; give up when the count has not moved
        for ``stall_s`` or ``alive()`` turns false. Returns the count seen last."""
        seen, moved = -1, time.monotonic()
        while True:
            now = await self.accepted()
            if now >= target:
                return now
            if now != seen:
                seen, moved = now, time.monotonic()
            elif time.monotonic() - moved > stall_s or not alive():
                return now
            await asyncio.sleep(poll_s)


class Stack:
    """A private RabbitMQ node and an emulator process under one temporary directory."""

    def __init__(self, keep: bool = False) -> None:
        import tempfile  # noqa: PLC0415

        # Not under pytest's basetemp (0700): the rabbitmq user must reach the node's dirs.
        self.workdir = Path(tempfile.mkdtemp(prefix="egb-bench-"))
        os.chmod(self.workdir, 0o755)
        self.keep = keep
        self.rabbit = RabbitServer(self.workdir / "rabbit")
        self.emulator = EmulatorProcess(self.workdir)

    @property
    def amqp_url(self) -> str:
        """The broker's URL (guest over loopback)."""
        return self.rabbit.amqp_url

    def broker_pid(self) -> int | None:
        """Pid of the node's Erlang VM (``beam.smp``), for CPU accounting."""
        for pid in pids_of_node(self.rabbit.node_name):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "beam.smp":
                    return pid
        return None

    def start(self) -> None:
        """Start the broker and the emulator (blocking, ~5-10 s)."""
        self.rabbit.start()
        self.emulator.start()

    def stop(self) -> None:
        """Stop both; remove the directory unless ``keep``."""
        self.emulator.stop()
        self.rabbit.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def pids_of_node(node_name: str) -> list[int]:
    """Pids of every process of a RabbitMQ node started by ``RabbitServer``."""
    from bench.procstat import pids_with_env  # noqa: PLC0415

    return pids_with_env(NODE_MARK, node_name)


async def reset_queue(url: str, queue: str = QUEUE) -> None:
    """Declare ``queue`` durable and purge it."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True)
        await q.purge()


async def queue_depth(url: str, queue: str = QUEUE) -> int:
    """Ready messages in ``queue`` (passive declare; unacknowledged ones are not counted)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)


def _message(seq: int, size: int) -> aio_pika.Message:
    return aio_pika.Message(
        make_body(seq, size, time.time()),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=uuid.uuid4().hex,
    )


async def publish_backlog(
    url: str, count: int, size: int, queue: str = QUEUE, progress_every: int = 0
) -> float:
    """Purge ``queue`` and publish ``count`` confirmed persistent JSON messages of ``size``
    bytes with message ids; returns messages per second. Streams: memory stays flat."""
    await reset_queue(url, queue)
    start = time.monotonic()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        for chunk in range(0, count, CONFIRM_WINDOW):
            seqs = range(chunk, min(count, chunk + CONFIRM_WINDOW))
            await asyncio.gather(*(exchange.publish(_message(i, size), queue) for i in seqs))
            if progress_every and chunk and chunk % progress_every == 0:
                log(f"  published {chunk:,} of {count:,}")
    elapsed = time.monotonic() - start
    return count / elapsed if elapsed > 0 else float("inf")


async def publish_paced(url: str, rate: float, total: int, size: int,
                        queue: str = QUEUE) -> float:
    """Publish ``total`` confirmed persistent messages at ``rate`` per second, each stamped with
    its publish time just before it is sent; returns the achieved rate."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[Any]] = []
        start = loop.time()
        sent = 0
        while sent < total:
            due = min(total, int((loop.time() - start) * rate) + 1)
            while sent < due:
                pending.append(asyncio.ensure_future(exchange.publish(_message(sent, size), queue)))
                sent += 1
            await asyncio.sleep(0.0005)
        elapsed = loop.time() - start
        await asyncio.gather(*pending)
    return total / elapsed if elapsed > 0 else float("inf")
