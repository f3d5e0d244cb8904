"""The two reference consumers, each run as its own process by :mod:`bench.runners`.

- ``raw``: the ceiling. aio-pika drains the queue (queue iterator, prefetch 1000) with no
  forwarding at all and acks with ``multiple=True`` every ``--ack-every`` messages: the fastest
  a Python consumer drains this broker.
- ``naive``: the loop a user writes by hand: consume one message, POST it as one CloudEvent to
  PutEvents with aiohttp, ack it, take the next.

Usage: ``python -m bench.consumers raw|naive --url AMQP_URL --queue Q ...``. Each prints
``READY`` once it is attached to the queue, then exactly one JSON line when it stops: ``count``,
``first`` and ``last`` (wall times of the first and last message handled) and, for ``raw
--latency``, ``latencies_ms`` (receipt minus the publish time in the body). It stops after
``--limit`` messages, ``--max-seconds`` after its first message, or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp

from bench.stack import CHANNEL_ID, PROJECT_ID


class _Run:
    """Counters shared by a consumer's callbacks."""

    def __init__(self, limit: int, max_seconds: float) -> None:
        self.limit = limit
        self.max_seconds = max_seconds
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.latencies_ms: list[float] = []
        self.errors = 0
        self.done = asyncio.Event()

    def tick(self) -> float:
        """Count one handled message; set :attr:`done` once a limit is reached."""
        now = time.time()
        self.count += 1
        if self.first is None:
            self.first = now
        self.last = now
        if self.count >= self.limit or now - self.first >= self.max_seconds:
            self.done.set()
        return now

    def result(self) -> dict[str, Any]:
        """The JSON line printed at the end."""
        out: dict[str, Any] = {"count": self.count, "first": self.first, "last": self.last,
                               "errors": self.errors}
        if self.latencies_ms:
            out["latencies_ms"] = [round(v, 3) for v in self.latencies_ms]
        return out


async def _connect(url: str, queue: str, prefetch: int) -> tuple[Any, Any]:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    return connection, await channel.declare_queue(queue, durable=True)


async def raw(args: argparse.Namespace, run: _Run) -> None:
    """Drain through a queue iterator, acking ``multiple=True`` every ``args.ack_every``."""
    connection, queue = await _connect(args.url, args.queue, args.prefetch)
    ack_every = args.ack_every
    unacked = 0
    async with connection, queue.iterator() as messages:
        print("READY", flush=True)
        async for message in messages:
            now = run.tick()
            if args.latency:
                run.latencies_ms.append((now - json.loads(message.body)["ts"]) * 1000)
            unacked += 1
            if unacked >= ack_every or run.done.is_set():
                await message.ack(multiple=True)
                unacked = 0
            if run.done.is_set():
                break


def _cloudevent(message: aio_pika.abc.AbstractIncomingMessage, source: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": message.message_id,
        "source": source,
        "type": "com.example.bench",
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": json.loads(message.body),
    }


async def naive(args: argparse.Namespace, run: _Run) -> None:
    """Consume one, POST one event, ack one; a failed POST is nacked with requeue."""
    connection, queue = await _connect(args.url, args.queue, args.prefetch)
    url = f"{args.endpoint}/v1/{PROJECT_ID}/channels/{CHANNEL_ID}/events"
    async with connection, aiohttp.ClientSession() as http, queue.iterator() as messages:
        print("READY", flush=True)
        async for message in messages:
            async with http.post(url, json={"events": [_cloudevent(message, args.source)]}) as r:
                ok = r.status == 200 and (await r.json()).get("failed_count") == 0
            if not ok:
                run.errors += 1
                await message.nack(requeue=True)
                continue
            await message.ack()
            run.tick()
            if run.done.is_set():
                break


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.consumers")
    parser.add_argument("kind", choices=["raw", "naive"])
    parser.add_argument("--url", required=True, help="AMQP URL")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--limit", type=int, default=10**12, help="stop after N messages")
    parser.add_argument("--max-seconds", type=float, default=1e9,
                        help="stop this long after the first message")
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--ack-every", type=int, default=200, help="raw: ack multiple every N")
    parser.add_argument("--latency", action="store_true",
                        help="raw: record receipt minus publish time per message")
    parser.add_argument("--endpoint", help="naive: the emulator's base URL")
    parser.add_argument("--source", default="bench-naive", help="naive: the EG source name")
    return parser


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    run = _Run(args.limit, args.max_seconds)
    body = raw if args.kind == "raw" else naive
    task = asyncio.ensure_future(body(args, run))

    def stop() -> None:
        run.done.set()
        task.cancel()  # it may be waiting for a message that never comes

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return run.result()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m bench.consumers``."""
    args = _parser().parse_args(argv)
    result = asyncio.run(_main(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
