"""Running the emulator as a real HTTP server (design §4 ``eg-bridge emulator``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from aiohttp import web

from bridge.emulator.app import EmulatorConfig, create_app

SHUTDOWN_TIMEOUT_S = 2.0
"""How long :meth:`EmulatorServer.close` lets in-flight requests finish."""


class EmulatorServer:
    """A started emulator.

    Attributes:
        url: the base URL, e.g. ``http://127.0.0.1:41234`` (the real port when 0 was asked).
        app: the running :class:`aiohttp.web.Application`.
    """

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self._runner = runner
        self.url = url
        self.app = runner.app

    async def close(self) -> None:
        """Stop listening, let in-flight requests finish (up to 2 s), close the data file."""
        await self._runner.cleanup()


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def start_emulator(config: EmulatorConfig) -> EmulatorServer:
    """Build the app for ``config`` and listen on ``config.host``:``config.port``.

    Raises:
        ConfigError: the config is invalid (see :func:`bridge.emulator.app.create_app`).
        OSError: the port is taken, or ``data_dir`` cannot be created or written.
    """
    runner = web.AppRunner(create_app(config), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    return EmulatorServer(runner, _url(config.host, port))


async def _wait_for_stop_signal() -> None:
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


async def run_emulator(config: EmulatorConfig) -> None:
    """Serve until SIGTERM or SIGINT, then close cleanly and return (exit 0).

    Writes one line ``eg-bridge emulator listening on <url>`` to stderr once listening.

    Raises:
        ConfigError, OSError: as :func:`start_emulator`.
    """
    server = await start_emulator(config)
    try:
        print(f"eg-bridge emulator listening on {server.url}", file=sys.stderr, flush=True)
        await _wait_for_stop_signal()
    finally:
        await server.close()
