"""An owners' endpoint that holds its answers until the test lets them go.

A real aiohttp server on a loopback port, for the alarms' action URLs (one path per
project: `<url>/<project>`). It keeps every callback as it came (path, headers, raw
body), repeats included, and answers none of them until `release()`: the test decides
when the notifier's first attempts are over, and can have the service crash right then.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Arrival:
    project: str  # from the path the alarm's action URL names
    request_id: str
    content_type: str
    raw: bytes

    @property
    def body(self) -> Any:
        return orjson.loads(self.raw)

    @property
    def instance_id(self) -> str:
        traits = self.body["reason_data"]["event"]["traits"]
        return str({t[0]: t[2] for t in traits}["instance_id"])


class HoldingConsumer:
    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{project}", self._callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def _callback(self, request: web.Request) -> web.Response:
        self.arrivals.append(
            Arrival(
                project=request.match_info["project"],
                request_id=request.headers.get("x-openstack-request-id", ""),
                content_type=request.headers.get("content-type", ""),
                raw=await request.read(),
            )
        )
        await self._released.wait()
        return web.json_response({"ok": True})

    def release(self) -> None:
        """Answer every held callback, and every later one at once."""
        self._released.set()

    def counts(self) -> Counter[tuple[str, str]]:
        """(project, server) -> how many callbacks about that server reached that project."""
        return Counter((a.project, a.instance_id) for a in self.arrivals)

    async def close(self) -> None:
        self.release()  # nothing left waiting on a test that ended early
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
