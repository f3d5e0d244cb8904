"""The test infrastructure itself, against a real RabbitMQ node: server, helpers, proxy."""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import aio_pika
import pytest

from tests.support.amqp import Publish, declare_queue, publish_json, publish_raw
from tests.support.proxy import TcpProxy
from tests.support.rabbit import RabbitFactory, RabbitServer, RabbitServerError

pytestmark = pytest.mark.integration


async def test_publish_1000_persistent_confirmed(rabbit: RabbitServer, queue_name: str) -> None:
    await declare_queue(rabbit.amqp_url, queue_name, durable=True)
    ids = await publish_json(rabbit.amqp_url, queue_name, ({"n": i} for i in range(1000)))

    assert len(set(ids)) == 1000
    assert rabbit.queue_counts(queue_name) == (1000, 0)


async def test_publish_fixture_and_raw(
    rabbit: RabbitServer, publish: Publish, queue_name: str
) -> None:
    ids = await publish(queue_name, {"a": 1}, [2])
    await publish_raw(rabbit.amqp_url, queue_name, b"not json", headers={"x-test": "raw"})
    await publish_raw(rabbit.amqp_url, queue_name, b"x" * 300_000, message_id="big", type="t")

    connection = await aio_pika.connect(rabbit.amqp_url)
    async with connection:
        queue = await (await connection.channel()).get_queue(queue_name)
        got = [await queue.get(no_ack=True) for _ in range(4)]
    assert [m.body for m in got[:3]] == [b'{"a": 1}', b"[2]", b"not json"]
    assert [m.message_id for m in got] == [*ids, None, "big"]
    assert got[0].delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert got[0].content_type == "application/json"
    assert (got[2].headers, got[2].content_type, got[2].delivery_mode) == (
        {"x-test": "raw"},
        None,
        1,
    )
    assert (len(got[3].body), got[3].type) == (300_000, "t")


async def test_publish_raw_reports_unroutable(rabbit: RabbitServer, queue_name: str) -> None:
    with pytest.raises(RuntimeError, match="did not take"):
        await publish_raw(rabbit.amqp_url, queue_name, b"nobody listens")


async def test_kill_then_restart_keeps_durable_messages(rabbit_factory: RabbitFactory) -> None:
    node = rabbit_factory()
    await declare_queue(node.amqp_url, "durable-q")
    ids = await publish_json(node.amqp_url, "durable-q", ({"n": i} for i in range(300)))

    node.kill()
    assert not node.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", node.amqp_port), timeout=1).close()
    node.restart()

    # Durable queues are recovered right after boot; under load list_queues can miss them
    # for a moment, which is the broker's timing, not a lost queue.
    deadline = time.monotonic() + 30
    while True:
        try:
            counts = node.queue_counts("durable-q")
            break
        except KeyError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    assert counts == (300, 0)
    connection = await aio_pika.connect(node.amqp_url)
    async with connection:
        queue = await (await connection.channel()).get_queue("durable-q")
        got = [await queue.get(no_ack=True) for _ in range(300)]
    assert [m.message_id for m in got] == ids
    assert [json.loads(m.body)["n"] for m in got] == list(range(300))


def test_failed_start_shows_the_log_and_stop_is_idempotent() -> None:
    node = RabbitServer(Path(tempfile.mkdtemp(prefix="egb-rabbit-")), conf_extra="not config")
    try:
        with pytest.raises(RabbitServerError, match="failed_to_parse_configuration_file"):
            node.start(timeout_s=60)
        assert not node.running
        node.stop()
        node.stop()
    finally:
        node.remove_data()
    assert not node.base_dir.exists()


def test_ctl_arguments_are_not_shell_expanded(rabbit: RabbitServer) -> None:
    password = "pa$$ 'w\"rd $HOME"
    rabbit.add_vhost("egb-vhost-$x")
    rabbit.add_user("egb-user-$x", password)
    rabbit.set_permissions("egb-user-$x", "egb-vhost-$x")

    async def connect() -> None:
        url = (
            f"amqp://{quote('egb-user-$x', safe='')}:{quote(password, safe='')}"
            f"@{rabbit.address}/{quote('egb-vhost-$x', safe='')}"
        )
        connection = await aio_pika.connect(url)
        await connection.close()

    asyncio.run(connect())


async def test_consumer_and_prefetch_are_visible(rabbit: RabbitServer, queue_name: str) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    connection = await aio_pika.connect(rabbit.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=37)
        queue = await channel.get_queue(queue_name)

        async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            pass

        await queue.consume(ignore, consumer_tag="egb-tag")

        consumers = [c for c in rabbit.list_consumers() if c["queue_name"] == queue_name]
        assert [(c["consumer_tag"], c["prefetch_count"]) for c in consumers] == [("egb-tag", 37)]
        assert 37 in rabbit.channel_prefetch()


async def test_proxy_drop_makes_robust_connection_reconnect(
    rabbit: RabbitServer, queue_name: str
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    async with TcpProxy("127.0.0.1", rabbit.amqp_port) as proxy:
        connection = await aio_pika.connect_robust(
            f"amqp://guest:guest@{proxy.url_host}/", reconnect_interval=0.2
        )
        async with connection:
            reconnected = asyncio.Event()
            connection.reconnect_callbacks.add(lambda *_: reconnected.set())
            channel = await connection.channel(publisher_confirms=True)
            await channel.default_exchange.publish(aio_pika.Message(b"before"), queue_name)
            assert proxy.accepted == 1

            await proxy.drop_connections()
            await asyncio.wait_for(reconnected.wait(), timeout=15)

            assert proxy.accepted == 2
            await channel.default_exchange.publish(aio_pika.Message(b"after"), queue_name)
    assert rabbit.queue_counts(queue_name) == (2, 0)


async def test_proxy_pause_holds_traffic_until_resume(
    rabbit: RabbitServer, queue_name: str
) -> None:
    await declare_queue(rabbit.amqp_url, queue_name)
    async with TcpProxy("127.0.0.1", rabbit.amqp_port) as proxy:
        connection = await aio_pika.connect(f"amqp://guest:guest@{proxy.url_host}/")
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            proxy.pause()
            publishing = asyncio.ensure_future(
                channel.default_exchange.publish(aio_pika.Message(b"held"), queue_name)
            )
            await asyncio.sleep(0.5)
            assert not publishing.done()
            assert rabbit.queue_counts(queue_name) == (0, 0)

            proxy.resume()
            await asyncio.wait_for(publishing, timeout=5)
    assert rabbit.queue_counts(queue_name) == (1, 0)
