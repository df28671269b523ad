"""Bounds on request bodies, checked before any route or parser sees them: their size
(`api.max_body_bytes`, 413) and, for JSON, how deep they nest (400).

The JSON parsers recurse: past some depth a body is a RecursionError (a 500) in one
library and a refused write in another (orjson stops at 255 levels), and a body that a
route accepted could fail half handled. No API of ours needs more than a few levels,
so a body that nests deeper than `MAX_DEPTH` is refused.
"""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opendoctor.api.errors import error_body

MAX_DEPTH = 32

_PAIR = re.compile(rb"\[\]|\{\}")
_OPENS = rb"[\[{]"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON in `body` nests deeper than `limit`.

    Every step runs in C, over the whole body at once: strings go, then everything but
    brackets, then each round takes out the innermost pairs. A body of well-formed JSON
    empties in as many rounds as it is deep; one that stops emptying is malformed, and
    left for the parser to say so. A run of more than `limit` opening brackets ends it
    at once (a deep body would otherwise take `limit` rounds that each remove little)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _without_strings(body).translate(None, _NOT_BRACKETS)
    run = re.compile(_OPENS + b"{%d}" % (limit + 1))  # that many opened in a row
    for _ in range(limit):
        if run.search(brackets):
            return True
        brackets, removed = _PAIR.subn(b"", brackets)
        if not brackets or not removed:
            return False
    return bool(_PAIR.search(brackets))


def _without_strings(body: bytes) -> bytes:
    """`body` without the contents of its JSON strings (brackets in them do not nest).
    Escapes go first (an escaped backslash, then an escaped quote, as a parser reads them
    from the left); then every other piece between quotes is a string's. Three passes
    of C over the body: a regular expression over each string took a third of the CPU
    that a storm's `PUT /events` of a hundred events cost."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(body.split(b'"')[::2])


class BodyLimit:
    """ASGI middleware: 413 for bodies over `limit` bytes (before they are read whole),
    400 for JSON bodies that nest deeper than `MAX_DEPTH`."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        json = True
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _refuse(send, 413, f"request body is larger than {self.limit} bytes")
                return
            if name == b"content-type":
                # YAML (a rule template) has its own bound; anything else is parsed as
                # JSON by some route, whatever it says it is.
                json = b"yaml" not in value.lower()
        # The whole body first (a route reads it whole anyway), so that a refusal comes
        # before any route runs: one that reads it through FastAPI would turn it into a
        # vague "error parsing the body".
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending it all
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await _refuse(send, 413, f"request body is larger than {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json and too_deep(body):
            await _refuse(send, 400, f"the JSON nests deeper than {MAX_DEPTH} levels")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, problem: str) -> None:
    resp = JSONResponse(error_body(status, [{"field": "body", "problem": problem}]), status)
    await send({"type": "http.response.start", "status": status, "headers": resp.raw_headers})
    await send({"type": "http.response.body", "body": resp.body})
