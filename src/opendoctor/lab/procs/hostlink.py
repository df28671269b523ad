"""A lab host's link to the service: server-group messages and what it knows of its VMs.

Up: `POST <base>/<host>/messages` with `{"messages": [...]}` (at most 100 and 512 KiB per
request), in order, retried with backoff like the events (`BatchSender`); a batch the
service refuses with 400, 413 or 422 is dropped (it never will accept it). Sending
never blocks the caller: `send` only queues.

Down: `GET <base>/<host>/stream`, held open: newline-delimited JSON objects (chunked),
`{"type": "ping"}` every 10 s. Every other object goes to `deliver` (the host's
supervisor, which passes it on to the VMs it names). When the stream ends or stays
silent for 30 s the host opens it again with backoff; each time it is open again
`on_connect` runs (the host re-sends its VMs' service states). A new base URL or token
replaces the stream at once.

Both authenticate with the events sink's token (`X-Auth-Token`). Where the base URL
comes from: the events sink setting, or derived from its URL (opendoctor's
`<root>/events` -> `<root>/v1/hostlink`). Standard library only: hosts import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, urlsplit

from opendoctor.lab.httpmsg import HttpParseError, read_head
from opendoctor.lab.procs.events import BatchSender
from opendoctor.wire.heartbeat import LineSplitter, ProtocolError

log = logging.getLogger("opendoctor.lab.procs.host")

MAX_BATCH, MAX_BATCH_BYTES = 100, 512 * 1024
MAX_DOWN_LINE = 1024 * 1024  # a status response of many peers is the longest
MAX_CHUNK = 1024 * 1024
SILENCE = 30.0  # three pings missed: the stream is dead even if its socket is not
BACKOFF_INITIAL, BACKOFF_MAX = 0.1, 5.0

Deliver = Callable[[dict[str, Any]], None]


def hostlink_base(events_url: str | None, hostlink_url: str | None = None) -> str | None:
    """The host link's base URL: the one given, else where opendoctor serves it beside
    the events URL (`<root>/events` or `<root>/v1/events` -> `<root>/v1/hostlink`),
    else None."""
    if hostlink_url:
        return hostlink_url.rstrip("/")
    url = (events_url or "").split("?", 1)[0].rstrip("/")
    if not url.endswith("/events"):
        return None
    root = url[: -len("/events")]
    return root.removesuffix("/v1") + "/v1/hostlink"


class HostLink:
    def __init__(
        self,
        host: str,
        deliver: Deliver,
        on_connect: Callable[[], None] | None = None,
        *,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.host = host
        self.base: str | None = None
        self.token: str | None = None
        self._deliver = deliver
        self._on_connect = on_connect
        self._backoff = (backoff_initial, backoff_max)
        self.up = BatchSender(
            method="POST",
            wrap=lambda batch: {"messages": batch},
            drop_statuses=frozenset({400, 413, 422}),
            what="host link",
            batch=MAX_BATCH,
            max_bytes=MAX_BATCH_BYTES - 64,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self.connected = False
        self.connects = 0
        self.received = 0
        self.last_error: str | None = None
        self._stream: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.up.start()

    async def close(self) -> None:
        await self._stop_stream()
        await self.up.close()

    async def configure(self, base: str | None, token: str | None) -> None:
        """Link to `base` (None: unlink); a new stream replaces the old one at once."""
        if (base, token) == (self.base, self.token) and (self._stream or base is None):
            return
        self.base, self.token = base, token
        where = f"{base}/{quote(self.host, safe='')}" if base else None
        self.up.configure(f"{where}/messages" if where else None, token)
        await self._stop_stream()
        if where is not None:
            self._stream = asyncio.create_task(self._follow(f"{where}/stream"))

    def send(self, message: dict[str, Any]) -> None:
        """Queue one up message (never waits; dropped and counted while unlinked)."""
        self.up.put(message)

    def stats(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "connected": self.connected,
            "connects": self.connects,
            "received": self.received,
            "last_error": self.last_error,
            "up": self.up.stats(),
        }

    async def _stop_stream(self) -> None:
        task, self._stream = self._stream, None
        self.connected = False
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self, url: str) -> None:
        delay, most = self._backoff
        while True:
            try:
                async for message in self._lines(url):
                    delay = self._backoff[0]
                    self.received += 1
                    try:
                        self._deliver(message)
                    except Exception:
                        log.exception("host link: delivering a down message failed")
                error = "the service ended the stream"
            except (
                OSError,
                EOFError,
                TimeoutError,
                ValueError,
                HttpParseError,
                ProtocolError,
                StreamError,
            ) as exc:
                # EOFError: IncompleteReadError; ValueError: LimitOverrunError's kin
                error = f"{exc.__class__.__name__}: {exc}"
            if self.connected or self.last_error != error:
                log.warning("host link stream %s: %s; reconnecting", url, error)
            self.connected, self.last_error = False, error
            await asyncio.sleep(delay)
            delay = min(delay * 2, most)

    async def _lines(self, url: str) -> AsyncIterator[dict[str, Any]]:
        """The stream's objects (not its pings), from a fresh connection."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StreamError(f"not an http(s) URL: {url!r}")
        tls = ssl.create_default_context() if parts.scheme == "https" else None
        lines = [f"GET {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += ["Accept: application/x-ndjson", "Connection: close"]
        if self.token:
            lines.append(f"X-Auth-Token: {self.token}")
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(
                parts.hostname, parts.port or (443 if tls else 80), ssl=tls, limit=MAX_CHUNK
            )
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            async with asyncio.timeout(10):
                await writer.drain()
                head = await read_head(reader, response=True)
            if head is None or head.status != 200:
                raise StreamError(f"HTTP {head.status if head else 'nothing'}")
            chunked = "chunked" in head.tokens("transfer-encoding")
            self.connected, self.last_error = True, None
            self.connects += 1
            log.info("host link stream open: %s", url)
            if self._on_connect is not None:
                self._on_connect()
            splitter = LineSplitter(MAX_DOWN_LINE)
            while True:
                async with asyncio.timeout(SILENCE):
                    data = await (_chunk(reader) if chunked else reader.read(MAX_CHUNK))
                if not data:
                    return
                splitter.feed(data)
                while (line := splitter.next_line()) is not None:
                    message = _parse(line)
                    if message is not None and message.get("type") != "ping":
                        yield message
        finally:
            writer.close()


class StreamError(Exception):
    """The service would not open the stream, or broke its framing."""


async def _chunk(reader: asyncio.StreamReader) -> bytes:
    """The next chunk of a chunked body; b"" at its end."""
    size_line = await reader.readuntil(b"\r\n")
    try:
        size = int(size_line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise StreamError(f"bad chunk size {size_line[:20]!r}") from None
    if size > MAX_CHUNK:
        raise StreamError(f"chunk of {size} bytes")
    if size == 0:
        return b""
    data = await reader.readexactly(size)
    if await reader.readexactly(2) != b"\r\n":
        raise StreamError("chunk not followed by CRLF")
    return data


def _parse(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        message = json.loads(line)
    except ValueError:
        log.warning("host link: a down line that is not JSON: %r", line[:100])
        return None
    return message if isinstance(message, dict) else None
