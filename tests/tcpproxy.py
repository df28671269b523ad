"""A TCP proxy that can be cut and restored: a server outage, for one service only.

Stopping the real database server would break every other test running at the time;
cutting a proxy in front of it looks the same to the service behind it (connections
drop, new ones are refused) and hurts nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib

from opendoctor.infra.procs import free_port


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`, until `cut()`; `restore()` on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(
            self._link, "127.0.0.1", self.port, reuse_address=True
        )

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a crashed server would."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._open |= pair
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._open -= pair


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        # One side gone: the other goes too (the transport may already be aborted).
        with contextlib.suppress(OSError):
            writer.close()
