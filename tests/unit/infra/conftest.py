"""A callback target on loopback for the HTTP clients' tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from tests.tcpproxy import free_port


@dataclass
class Site:
    address: str  # host:port
    ports: list[int] = field(default_factory=list)  # the client port of each /ok


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    """A target (`/ok`), one that redirects (`/elsewhere`), one that talks on (`/chatty`)."""
    found = Site("")

    async def ok(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        found.ports.append(peer[1] if peer else 0)
        return web.Response(text="ok")

    async def elsewhere(_: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def chatty(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1_000_000)

    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_get("/ok", ok)
    app.router.add_post("/elsewhere", elsewhere)
    app.router.add_post("/chatty", chatty)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    found.address = f"127.0.0.1:{port}"
    try:
        yield found
    finally:
        await runner.cleanup()
