"""ASGI across processes: a request served by another process's application, each ASGI
message carried over a Unix socket of its own.

Why: where the HTTP front runs in a process of its own (app/front_process.py), every
request it does not serve itself (all but the events API) is served by the service's
process, where the state it reads lives. As `infra.loops.bridged` does across two loops,
each message crosses as it comes, so that streams, a client that goes away, and an
application that fails behave as they would in one process.

One connection per request, on a socket only its owner may open (a directory of mode
0700); the frames are length-prefixed JSON with the body's bytes after it, never pickle:
the front parses what strangers send, and a bug there must not run code in the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import Any

import orjson

from opendoctor.infra.loops import Asgi, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_HEAD = struct.Struct("!II")  # the JSON's length, the body's length
# What the front sends is bounded by its own server's limits; these only stop a broken
# peer from making the other side read without end.
MAX_JSON = 1 << 20
MAX_BODY = 1 << 30
# Requests the front may open at once before the service accepts them (the kernel caps it
# at net.core.somaxconn): a storm of callers must queue, not be refused.
BACKLOG = 4096
DRAIN_WITHIN = 5.0  # seconds the front has to close its end once the answer is sent
# The scope's keys that mean the same in the other process (the application, its state and
# the server's extensions stay where they are).
_SCOPE_KEYS = (
    "type", "asgi", "http_version", "method", "scheme", "path", "raw_path",
    "query_string", "root_path", "headers", "client", "server", "subprotocols",
)  # fmt: skip
_BYTES_KEYS = ("raw_path", "query_string")
_BODY_KEYS = ("body", "bytes")


class PipeError(ConnectionError):
    """The other side sent what is not a frame of this protocol."""


def encode(message: Message) -> bytes:
    """One frame: the message, its body's bytes carried raw after its JSON."""
    fields: dict[str, Any] = {}
    body = b""
    for key, value in message.items():
        if key in _BODY_KEYS and isinstance(value, bytes | bytearray | memoryview):
            body = bytes(value)
            fields[key] = None
        elif key == "headers":
            fields[key] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in value]
        elif key in _BYTES_KEYS and isinstance(value, bytes):
            fields[key] = value.decode("latin-1")
        else:
            fields[key] = value
    head = orjson.dumps(fields)
    return _HEAD.pack(len(head), len(body)) + head + body


async def read(reader: asyncio.StreamReader) -> Message | None:
    """The next message, or None at the end of the stream."""
    try:
        size, body_size = _HEAD.unpack(await reader.readexactly(_HEAD.size))
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise PipeError("the stream ended inside a frame") from None
        return None
    if size > MAX_JSON or body_size > MAX_BODY:
        raise PipeError(f"a frame of {size} + {body_size} bytes, over the limit")
    try:
        fields = orjson.loads(await reader.readexactly(size))
        body = await reader.readexactly(body_size) if body_size else b""
    except asyncio.IncompleteReadError:
        raise PipeError("the stream ended inside a frame") from None
    except orjson.JSONDecodeError as exc:
        raise PipeError(f"a frame that is not JSON: {exc}") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("type"), str):
        raise PipeError("a frame without a message type")
    message: Message = fields
    for key in _BODY_KEYS:
        if key in message and message[key] is None:
            message[key] = body
    if "headers" in message:
        message["headers"] = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in message["headers"]
        ]
    for key in _BYTES_KEYS:
        if isinstance(message.get(key), str):
            message[key] = message[key].encode("latin-1")
    for key in ("client", "server"):
        if isinstance(message.get(key), list):
            message[key] = tuple(message[key])
    return message


def _disconnect(scope_type: str) -> Message:
    return (
        {"type": "websocket.disconnect", "code": 1006}
        if scope_type == "websocket"
        else {"type": "http.disconnect"}
    )


async def forward(path: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ASGI call by the application behind the socket at `path`: the front's side."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(encode({k: scope[k] for k in _SCOPE_KEYS if k in scope}))

    async def upstream() -> None:
        while True:
            message = await receive()
            writer.write(encode(message))
            await writer.drain()
            if message["type"] in ("http.disconnect", "websocket.disconnect"):
                return

    up = asyncio.create_task(upstream(), name="asgi-pipe:upstream")
    try:
        while (message := await read(reader)) is not None:
            await send(message)
    except ConnectionError as exc:
        # The service's end went away mid-call: the front's server answers 500, or cuts
        # an answer already begun, as for an application that failed.
        log.warning("a request to the service's process was cut", extra={"error": str(exc)})
    finally:
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await up
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def serve(path: str, app: Asgi) -> asyncio.Server:
    """Listen at `path` and serve each connection's ASGI call with `app`: the service's side."""

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            scope = await read(reader)
            if scope is None:
                return
            ended = False

            async def receive() -> Message:
                nonlocal ended
                message = None if ended else await read(reader)
                if message is None:  # the front went away: as a client that disconnects
                    ended = True
                    return _disconnect(scope["type"])
                return message

            async def send(message: Message) -> None:
                writer.write(encode(message))
                await writer.drain()

            await app(scope, receive, send)
            # The answer ends with our end of the stream. What the front still sends
            # (the request's body unread, its client's disconnect) is read and dropped
            # until it closes too: a socket closed with unread bytes is reset, and the
            # reset could reach the front before the answer's last frames.
            writer.write_eof()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_WITHIN):
                    while await reader.read(1 << 16):
                        pass
        except (PipeError, ConnectionError):
            pass
        except Exception:
            log.exception("the application failed a request from the front process")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_unix_server(one, path, backlog=BACKLOG)
