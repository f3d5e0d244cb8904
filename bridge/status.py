"""The status server: ``/healthz``, ``/readyz``, ``/metrics``, ``/status`` (shared/design.md §8).

An aiohttp app on ``status.listen``, started before anything else and stopped last. It reads
what it shows from a :class:`StatusProvider` (the runtime) and never changes the bridge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.settings import host_port


class StatusProvider(Protocol):
    """What the status server asks the runtime."""

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason); reason is "" when ready."""
        ...

    def status(self) -> Mapping[str, Any]:
        """The /status document, secrets already masked."""
        ...

    def metrics_text(self) -> bytes:
        """Prometheus text exposition."""
        ...


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def create_app(provider: StatusProvider) -> web.Application:
    """The aiohttp application serving the four endpoints."""

    async def healthz(_: web.Request) -> web.Response:
        return _json({"ok": True})

    async def readyz(_: web.Request) -> web.Response:
        ready, reason = provider.readiness()
        if ready:
            return _json({"ready": True})
        return _json({"ready": False, "reason": reason}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=provider.metrics_text())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def status(_: web.Request) -> web.Response:
        return _json(provider.status())

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    return app


class StatusServer:
    """Serves :func:`create_app` on ``listen`` (``host:port``; port 0 picks a free one).

    Raises:
        OSError: from :meth:`start` when the address is taken.
    """

    def __init__(self, listen: str, provider: StatusProvider) -> None:
        self._host, self._port = host_port(listen) if not listen.endswith(":0") else (
            listen.rsplit(":", 1)[0].strip("[]"), 0)
        self._runner = web.AppRunner(create_app(provider), access_log=None)
        self.port = 0

    async def start(self) -> None:
        """Bind and serve."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8081``."""
        return f"http://{self._host}:{self.port}"

    async def stop(self) -> None:
        """Stop serving."""
        await self._runner.cleanup()
