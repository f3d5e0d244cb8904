"""Shared fixtures: one RabbitMQ node per session, private nodes on demand, unique queue names."""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.amqp import Publish, declare_queue, publish_json
from tests.support.rabbit import SERVER_SCRIPT, RabbitFactory, RabbitServer, reap_orphans


def _require_rabbitmq() -> None:
    if not SERVER_SCRIPT.exists():
        pytest.fail(
            f"{SERVER_SCRIPT} is missing: run scripts/setup.sh (as root) to install"
            " rabbitmq-server and the test dependencies",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitServer]:
    """The session's RabbitMQ node (started once, ~5 s), stopped at the end of the session.

    Tests must not stop or kill it: use ``rabbit_factory`` for broker-crash tests.
    """
    _require_rabbitmq()
    reap_orphans()
    # Not under pytest's basetemp: /tmp/pytest-of-root is 0700, the rabbitmq user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="egb-rabbit-"))
    server = RabbitServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def rabbit_factory() -> Iterator[RabbitFactory]:
    """Start private nodes (``rabbit_factory(conf_extra=..., advanced_config=...)``).

    Each is killed and its directory removed when the test ends.
    """
    _require_rabbitmq()
    servers: list[RabbitServer] = []

    def make(**kwargs: Any) -> RabbitServer:
        server = RabbitServer(Path(tempfile.mkdtemp(prefix="egb-rabbit-")), **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.remove_data()


@pytest.fixture
def queue_name(request: pytest.FixtureRequest) -> str:
    """A queue name unique to this test (and this run)."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    return f"egb-test.{test}.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def publish(rabbit: RabbitServer) -> Publish:
    """``await publish(queue, *payloads, **publish_json_options)``: declare durable, publish."""

    async def _publish(queue: str, *payloads: Any, **options: Any) -> list[str | None]:
        await declare_queue(rabbit.amqp_url, queue)
        return await publish_json(rabbit.amqp_url, queue, payloads, **options)

    return _publish
