"""Producer-side AMQP helpers for tests: declare queues and publish as real producers do.

Each call opens and closes its own connection, so a helper never shares state with the code
under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
from pamqp import body as pamqp_body
from pamqp import commands, encode, frame, header
from pamqp.exceptions import UnmarshalingException


class RawLongString(bytes):
    """A header value that :func:`publish_raw` sends as an AMQP long string (``S``) holding
    exactly these bytes, valid UTF-8 or not (pamqp encodes only ``str`` as a long string)."""


Publish = Callable[..., Awaitable[list[str | None]]]
"""Type of the ``publish`` fixture: ``await publish(queue, *payloads, **publish_json_options)``."""

BATCH = 1000
"""Publishes in flight at once; confirms come back in batches, so this sets the throughput."""


async def declare_queue(
    url: str, name: str, *, durable: bool = True, arguments: dict[str, Any] | None = None
) -> None:
    """Declare ``name`` (durable by default) on the broker at ``url``."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=durable, arguments=arguments)


async def declare_dead_lettered_queue(url: str, name: str, *, durable: bool = True) -> str:
    """Declare ``name`` with its own DLX: a fanout exchange ``<name>.dlx`` bound to a queue
    ``<name>.dead``, so a ``basic.nack(requeue=False)`` lands there. Returns that queue's name."""
    dlx, dead = f"{name}.dlx", f"{name}.dead"
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(dlx, aio_pika.ExchangeType.FANOUT,
                                                  durable=durable)
        queue = await channel.declare_queue(dead, durable=durable)
        await queue.bind(exchange)
        await channel.declare_queue(name, durable=durable,
                                    arguments={"x-dead-letter-exchange": dlx})
    return dead


async def get_all(url: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every ready message off ``queue`` (``basic.get`` with auto-ack), oldest first."""
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=False)
        while (message := await source.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    return taken


async def publish_json(
    url: str,
    queue: str,
    payloads: Iterable[Any],
    *,
    message_ids: bool = True,
    persistent: bool = True,
    confirm: bool = True,
    headers: dict[str, Any] | None = None,
) -> list[str | None]:
    """Publish each payload as a JSON message to ``queue`` through the default exchange.

    With ``confirm`` every message is confirmed by the broker before this returns (publishes run
    ``BATCH`` at a time, so 10,000 messages take seconds, not minutes). Returns the message ids
    in publishing order: uuid4 hex, or None when ``message_ids`` is false (aiormq then sets a
    random id of its own: use :func:`publish_raw` for a message without an id).
    """
    delivery = (
        aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
    )
    messages = [
        aio_pika.Message(
            json.dumps(payload).encode(),
            content_type="application/json",
            delivery_mode=delivery,
            message_id=uuid.uuid4().hex if message_ids else None,
            headers=headers,
        )
        for payload in payloads
    ]
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=confirm)
        exchange = channel.default_exchange
        for start in range(0, len(messages), BATCH):
            batch = messages[start : start + BATCH]
            await asyncio.gather(*(exchange.publish(m, routing_key=queue) for m in batch))
    return [m.message_id for m in messages]


async def publish_raw(url: str, queue: str, body: bytes, **properties: Any) -> None:
    """Publish one confirmed message exactly as given: ``properties`` are ``aio_pika.Message``'s.

    Nothing is defaulted: no content type, transient unless ``delivery_mode`` says otherwise,
    and no message id unless given. aiormq gives every message without one a random
    ``message_id``, so this speaks AMQP itself (pamqp frames over a socket) to reach the
    bridge's "no message id" path. Header values may be of any AMQP field type pamqp encodes
    (str, bool, int, float, Decimal, datetime, dict, list, bytearray, None), plus ``bytes``
    (a byte array, ``x``) and :class:`RawLongString` (a long string of exactly those bytes).
    Raises ``RuntimeError`` if the broker refuses the message.
    """
    props = aio_pika.Message(body, **properties).properties
    with _any_header_bytes():
        content_header = frame.marshal(header.ContentHeader(0, len(body), props), 1)
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) or "/"
    login = f"\0{unquote(parts.username or 'guest')}\0{unquote(parts.password or 'guest')}"
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 5672)
    frames = _FrameReader(reader)
    try:
        writer.write(frame.marshal(header.ProtocolHeader(), 0))
        await frames.expect(commands.Connection.Start)
        send = _sender(writer)
        send(commands.Connection.StartOk(response=login), 0)
        tune = await frames.expect(commands.Connection.Tune)
        send(commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0), 0)
        send(commands.Connection.Open(virtual_host=vhost), 0)
        await frames.expect(commands.Connection.OpenOk)
        send(commands.Channel.Open(), 1)
        await frames.expect(commands.Channel.OpenOk)
        send(commands.Confirm.Select(), 1)
        await frames.expect(commands.Confirm.SelectOk)
        send(commands.Basic.Publish(routing_key=queue, mandatory=True), 1)
        writer.write(content_header)
        step = (tune.frame_max or 131072) - 8
        for offset in range(0, len(body), step):
            send(pamqp_body.ContentBody(body[offset : offset + step]), 1)
        answer = await frames.expect(commands.Basic.Ack, commands.Basic.Nack, commands.Basic.Return)
        if not isinstance(answer, commands.Basic.Ack):
            raise RuntimeError(f"broker did not take the message: {answer!r}")
        send(commands.Connection.Close(200, "bye", 0, 0), 0)
        await frames.expect(commands.Connection.CloseOk)
    finally:
        writer.transport.abort()


_pamqp_table_value = encode.encode_table_value


def _table_value(value: Any) -> bytes:
    if isinstance(value, RawLongString):
        return b"S" + struct.pack(">I", len(value)) + bytes(value)
    if isinstance(value, bytes):
        return b"x" + struct.pack(">I", len(value)) + value
    return _pamqp_table_value(value)


@contextlib.contextmanager
def _any_header_bytes() -> Iterator[None]:
    """Let pamqp's table encoder (looked up by module global, nested tables and arrays too)
    take ``bytes`` and :class:`RawLongString`; synchronous, so nothing else sees the swap."""
    encode.encode_table_value = _table_value
    try:
        yield
    finally:
        encode.encode_table_value = _pamqp_table_value


def _sender(writer: asyncio.StreamWriter) -> Callable[[Any, int], None]:
    return lambda value, channel: writer.write(frame.marshal(value, channel))


class _FrameReader:
    """Read AMQP frames; a Connection.Close or Channel.Close from the broker raises."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = b""

    async def expect(self, *kinds: type[Any]) -> Any:
        while True:
            value = await self._next()
            if isinstance(value, kinds):
                return value
            if isinstance(value, commands.Connection.Close | commands.Channel.Close):
                raise RuntimeError(f"broker closed: {value.reply_code} {value.reply_text}")

    async def _next(self) -> Any:
        while True:
            try:
                used, _channel, value = frame.unmarshal(self._buffer)
            except UnmarshalingException:
                chunk = await self._reader.read(65536)
                if not chunk:
                    raise ConnectionError("broker closed the socket") from None
                self._buffer += chunk
                continue
            self._buffer = self._buffer[used:]
            return value
