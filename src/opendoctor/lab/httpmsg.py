"""Reading HTTP/1.x messages from asyncio streams: heads, and bodies of every framing.

Shared by the lab's load balancer (requests from clients, answers of members) and the
hosts' event sender. Standard library only: hosts import it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024

# Headers that describe one connection, never forwarded by a proxy (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class HttpParseError(Exception):
    """The peer sent something that is not HTTP/1.x, or too much of it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Head:
    """A request line or status line, split in three, and the header fields in order."""

    start: tuple[str, str, str]
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def tokens(self, name: str) -> set[str]:
        """Comma-separated tokens of every `name` field, lower case (Connection, ...)."""
        name = name.lower()
        found: set[str] = set()
        for key, value in self.headers:
            if key.lower() == name:
                found.update(t.strip().lower() for t in value.split(",") if t.strip())
        return found

    @property
    def version(self) -> str:
        # Requests end with the version, responses start with it.
        return self.start[0] if self.start[0].startswith("HTTP/") else self.start[2]

    @property
    def status(self) -> int:
        return int(self.start[1])

    def keep_alive(self) -> bool:
        connection = self.tokens("connection")
        if self.version == "HTTP/1.1":
            return "close" not in connection
        return "keep-alive" in connection


async def read_head(reader: asyncio.StreamReader, *, response: bool = False) -> Head | None:
    """The next message head; None if the peer closed cleanly before sending one."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpParseError("connection closed in the middle of a message head") from None
    except asyncio.LimitOverrunError:
        raise HttpParseError("message head too large", 431) from None
    text = raw.decode("latin-1")
    first, _, rest = text.partition("\r\n")
    parts = first.split(" ", 2)
    if response:
        if len(parts) == 2:
            parts.append("")
        ok = len(parts) == 3 and parts[0].startswith("HTTP/1.") and parts[1].isdigit()
    else:
        ok = len(parts) == 3 and parts[2].startswith("HTTP/1.") and bool(parts[0])
    if not ok:
        raise HttpParseError(f"bad start line {first[:100]!r}")
    headers: list[tuple[str, str]] = []
    for line in rest.split("\r\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep or not key or key != key.strip():
            raise HttpParseError(f"bad header line {line[:100]!r}")
        headers.append((key, value.strip()))
    return Head((parts[0], parts[1], parts[2]), headers)


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpParseError(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            break
        if len(body) + size > limit:
            raise HttpParseError("body too large", 413)
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise HttpParseError("chunk not followed by CRLF")
    # Trailer fields, if any, end with an empty line; they are dropped.
    while (await reader.readuntil(b"\r\n")) != b"\r\n":
        pass
    return bytes(body)


async def read_body(
    reader: asyncio.StreamReader, head: Head, *, until_close: bool = False, limit: int = MAX_BODY
) -> bytes:
    """The body that follows `head`, un-chunked.

    Without Content-Length or chunked framing a request has no body, while a response
    runs until the connection closes (`until_close`).
    """
    if "chunked" in head.tokens("transfer-encoding"):
        return await _read_chunked(reader, limit)
    length = head.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise HttpParseError(f"bad Content-Length {length[:20]!r}")
        if int(length) > limit:
            raise HttpParseError("body too large", 413)
        return await reader.readexactly(int(length))
    if not until_close:
        return b""
    body = bytearray()
    while chunk := await reader.read(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise HttpParseError("body too large", 413)
    return bytes(body)


def has_body(method: str, status: int) -> bool:
    """Whether a response to `method` with `status` carries a body."""
    return method != "HEAD" and status >= 200 and status not in (204, 304)


def render_head(start: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [start, *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
