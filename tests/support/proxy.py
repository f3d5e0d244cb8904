"""A TCP proxy the tests own, to put faults between a client and a server.

``drop_connections()`` aborts every proxied connection (both sides see a reset), ``pause()``
turns the proxy into a black hole (connections stay open, bytes and new connections wait) until
``resume()``.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1"):
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.port = 0
        self.accepted = 0
        """Client connections accepted so far (a reconnect shows up here)."""
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on a free port and return it."""
        self._server = await asyncio.start_server(self._handle, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url_host(self) -> str:
        """``host:port`` to connect to instead of the target."""
        return f"{self.listen_host}:{self.port}"

    async def drop_connections(self) -> None:
        """Abort every client and upstream socket and wait for the forwarding to end."""
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def pause(self) -> None:
        """Stop forwarding bytes and hold new connections (they are not refused)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again, including whatever was held back."""
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        self.resume()
        await self.drop_connections()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        self.accepted += 1
        upstream_w: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()
            upstream_r, upstream_w = await asyncio.open_connection(
                self.target_host, self.target_port
            )
            self._writers.add(upstream_w)
            await asyncio.gather(self._pipe(client_r, upstream_w), self._pipe(upstream_r, client_w))
        except OSError:
            pass
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    writer.transport.abort()
                    self._writers.discard(writer)
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        # One side is gone: end the other too, as a dead connection should.
        writer.transport.abort()
