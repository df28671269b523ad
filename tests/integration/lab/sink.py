"""An events sink for the lab tests: a real aiohttp app that records every request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from opendoctor.infra.procs import free_port


@dataclass
class Received:
    arrived: float
    method: str
    token: str | None
    events: list[dict[str, Any]]


@dataclass
class EventSink:
    """Records `PUT /events` bodies; `start`/`stop` may be called again on the same port."""

    port: int = field(default_factory=free_port)
    status: int = 200
    requests: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for r in self.requests for e in r.events]

    def of(self, instance_id: str, status: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["details"].get("instance_id") == instance_id
            and (status is None or e["details"]["status"] == status)
        ]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        arrived = time.time()
        self.requests.append(
            Received(arrived, request.method, request.headers.get("X-Auth-Token"), body)
        )
        return web.json_response({"accepted": len(body)}, status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/events", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
