"""ASGI across processes (infra/asgi_pipe.py): frames, their bounds, and a request served
through a real Unix socket, a stream and a client that goes away included."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from opendoctor.infra import asgi_pipe
from opendoctor.infra.loops import Message, Receive, Scope, Send


async def read_back(data: bytes) -> Message | None:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await asgi_pipe.read(reader)


async def test_a_message_comes_back_as_it_went() -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/alarms",
        "raw_path": b"/v2/alarms",
        "query_string": b"q=\xe9",
        "headers": [(b"x-auth-token", b"t\xf6k"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    assert await read_back(asgi_pipe.encode(scope)) == scope
    body = {"type": "http.request", "body": bytes(range(256)) * 3, "more_body": True}
    assert await read_back(asgi_pipe.encode(body)) == body


async def test_the_end_of_the_stream_is_none_and_a_cut_frame_is_an_error() -> None:
    assert await read_back(b"") is None
    frame = asgi_pipe.encode({"type": "http.request", "body": b"abc"})
    with pytest.raises(asgi_pipe.PipeError, match="ended inside"):
        await read_back(frame[:-1])


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (struct.pack("!II", asgi_pipe.MAX_JSON + 1, 0), "over the limit"),
        (struct.pack("!II", 2, asgi_pipe.MAX_BODY + 1) + b"{}", "over the limit"),
        (struct.pack("!II", 3, 0) + b"{x}", "not JSON"),
        (struct.pack("!II", 2, 0) + b"[]", "without a message type"),
    ],
)
async def test_what_is_not_a_frame_is_refused(frame: bytes, problem: str) -> None:
    with pytest.raises(asgi_pipe.PipeError, match=problem):
        await read_back(frame)


class Recorder:
    """An ASGI application that echoes the request's body, streams, or waits for the
    client to go away, and remembers what it received."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.gone = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/echo":
            body = b""
            while True:
                message = await receive()
                self.received.append(message)
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            await send({"type": "http.response.start", "status": 201, "headers": []})
            await send({"type": "http.response.body", "body": body})
        elif scope["path"] == "/wait":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            self.gone.set()
        else:
            raise RuntimeError("a bug in the application")


@pytest.fixture
async def pipe(tmp_path: Path) -> AsyncIterator[tuple[str, Recorder]]:
    app = Recorder()
    path = str(tmp_path / "pipe")
    server = await asgi_pipe.serve(path, app)
    yield path, app
    server.close()


def scope_of(path: str) -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}


async def test_a_request_is_served_through_the_socket(pipe: tuple[str, Recorder]) -> None:
    path, app = pipe
    parts = [
        {"type": "http.request", "body": b"one ", "more_body": True},
        {"type": "http.request", "body": b"two", "more_body": False},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        if parts:
            return parts.pop(0)
        await asyncio.Event().wait()  # as a server does until the client goes away
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    await asgi_pipe.forward(path, scope_of("/echo"), receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 201 and sent[1]["body"] == b"one two"
    assert [m["body"] for m in app.received] == [b"one ", b"two"]


async def test_a_client_that_goes_away_reaches_the_application(
    pipe: tuple[str, Recorder],
) -> None:
    path, app = pipe
    first_chunk = asyncio.Event()
    sent: list[Any] = []

    async def receive() -> Message:
        await first_chunk.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message.get("body"))
        if message.get("body") == b"first":
            first_chunk.set()

    await asyncio.wait_for(asgi_pipe.forward(path, scope_of("/wait"), receive, send), 10)
    await asyncio.wait_for(app.gone.wait(), 10)
    assert b"first" in sent


async def test_an_application_that_fails_ends_the_request_without_an_answer(
    pipe: tuple[str, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = pipe
    sent: list[Message] = []
    asked = 0

    async def receive() -> Message:
        nonlocal asked
        asked += 1
        if asked > 1:
            await asyncio.Event().wait()
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    # The front's server answers 500 for a call that returned without starting one.
    await asyncio.wait_for(asgi_pipe.forward(path, scope_of("/bug"), receive, send), 10)
    assert sent == []
    assert "the application failed a request" in caplog.text
