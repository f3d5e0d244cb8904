"""Fixtures shared by the integration tests: the emulator as a real HTTP server, bridge
processes that are killed when the test ends, and a unique source name."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from bridge.emulator import EmulatorConfig, start_emulator
from tests.support.bridge import CHANNEL_ID, BridgeProcess, Emulator


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An emulator (auth none) with the test channel, on a free port."""
    server = await start_emulator(EmulatorConfig(port=0, channels={"test": CHANNEL_ID}))
    try:
        yield Emulator(server.url)
    finally:
        await server.close()


@pytest.fixture
def bridges() -> Iterator[list[BridgeProcess]]:
    """Append every started bridge; each is SIGKILLed (if still running) after the test."""
    started: list[BridgeProcess] = []
    yield started
    for bridge in started:
        bridge.kill()


@pytest.fixture
def source_name() -> str:
    """A source name unique to this test."""
    return f"test-{uuid.uuid4().hex[:10]}"
