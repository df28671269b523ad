"""A small stand-in for the service end of the host link, for the lab's own tests.

A real aiohttp server: `PUT /events` (the events sink, so that the hosts derive the host
link's URL from it as they do with the service), `POST /v1/hostlink/{host}/messages` and
`GET /v1/hostlink/{host}/stream` (chunked NDJSON). It records every up message with the host
that sent it and routes `group-send` to the other members of the sender's groups, on
whichever host each member last said it started; the real routing is the service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from opendoctor.infra.procs import free_port

TOKEN = "link-test-token"


@dataclass
class LinkServer:
    port: int = field(default_factory=free_port)
    groups: dict[str, list[str]] = field(default_factory=dict)  # group id -> members
    up: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (host, message)
    events: list[dict[str, Any]] = field(default_factory=list)
    where: dict[str, str] = field(default_factory=dict)  # instance -> host
    streams: dict[str, asyncio.Queue[dict[str, Any]]] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)  # hosts, each time a stream opened
    _runner: web.AppRunner | None = None

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def of(self, kind: str, host: str | None = None) -> list[dict[str, Any]]:
        return [m for h, m in self.up if m["type"] == kind and host in (None, h)]

    def send_down(self, host: str, message: dict[str, Any]) -> None:
        self.streams[host].put_nowait(message)

    def _authorised(self, request: web.Request) -> None:
        if request.headers.get("X-Auth-Token") != TOKEN:
            raise web.HTTPUnauthorized()

    async def _events(self, request: web.Request) -> web.Response:
        self._authorised(request)
        self.events.extend(await request.json())
        return web.json_response({"accepted": 1})

    async def _messages(self, request: web.Request) -> web.Response:
        self._authorised(request)
        host = request.match_info["host"]
        messages = (await request.json())["messages"]
        for message in messages:
            self.up.append((host, message))
            if message["type"] == "instance-state" and message["state"] == "started":
                self.where[message["instance_id"]] = host
            elif message["type"] == "group-send":
                self._route(message)
        return web.json_response({"accepted": len(messages)}, status=202)

    def _route(self, message: dict[str, Any]) -> None:
        sender = message["from"]
        for group, members in self.groups.items():
            if sender not in members or message["group"] not in (None, group):
                continue
            by_host: dict[str, list[str]] = {}
            for member in members:
                if member != sender and member in self.where:
                    by_host.setdefault(self.where[member], []).append(member)
            for host, to in by_host.items():
                if host in self.streams:
                    self.send_down(
                        host,
                        {
                            "type": "group-message",
                            "to": to,
                            "from": sender,
                            "group": group,
                            "payload": message["payload"],
                            "msg_id": message["msg_id"],
                        },
                    )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self._authorised(request)
        host = request.match_info["host"]
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.streams[host] = queue  # a newer stream replaces the older
        self.opened.append(host)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while self.streams.get(host) is queue:
                try:
                    message = await asyncio.wait_for(queue.get(), 10)
                except TimeoutError:
                    message = {"type": "ping"}
                await response.write(json.dumps(message).encode() + b"\n")
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/events", self._events)
        app.router.add_post("/v1/hostlink/{host}/messages", self._messages)
        app.router.add_get("/v1/hostlink/{host}/stream", self._stream)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.streams.clear()
        if self._runner is not None:
            await self._runner.cleanup()
