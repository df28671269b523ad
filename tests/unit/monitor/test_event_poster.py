"""A standalone monitor's reports: kept until the API takes them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from opendoctor.core.model import Event
from opendoctor.infra.httpclient import HttpClient
from opendoctor.monitor.standalone import EventPoster
from tests.tcpproxy import free_port


class Api:
    """An events API that refuses credentials until told to take them."""

    def __init__(self) -> None:
        self.accepting = False
        self.tokens: list[str | None] = []
        self.taken: list[object] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.tokens.append(request.headers.get("X-Auth-Token"))
        if not self.accepting:
            return web.json_response({"error": {"status": 401}}, status=401)
        self.taken.append(await request.json())
        return web.json_response({"accepted": ["x"]}, status=202)


@pytest.fixture
async def api() -> AsyncIterator[tuple[Api, str]]:
    state = Api()
    app = web.Application()
    app.router.add_put("/events", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_report_refused_for_its_credentials_is_kept_and_sent_again(
    api: tuple[Api, str],
) -> None:
    """The operator fixes the token (here: the API starts taking it); the fault reported
    meanwhile still arrives, once."""
    state, url = api
    http = HttpClient()
    poster = EventPoster(url, http, "monitor-token", auth_retry=0.05)
    event = Event(type="compute.host.down", hostname="compute1", status="down", time=time.time())

    async def after_two_refusals() -> None:
        while len(state.tokens) < 2:
            await asyncio.sleep(0.01)
        state.accepting = True

    try:
        await asyncio.gather(poster(event), after_two_refusals())
    finally:
        await http.close()
    assert len(state.taken) == 1
    assert set(state.tokens) == {"monitor-token"} and len(state.tokens) >= 3
