"""A lab host's host-link client against a real HTTP server: order, retries, refusals,
the stream's reconnection and its replacement by a newer one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from opendoctor.lab.procs.hostlink import HostLink, hostlink_base

from .helpers import eventually
from .linkserver import TOKEN, LinkServer


@pytest.mark.parametrize(
    ("events", "given", "base"),
    [
        ("http://s:1/events", None, "http://s:1/v1/hostlink"),
        ("http://s:1/v1/events/", None, "http://s:1/v1/hostlink"),
        ("http://s:1/events", "http://other:2/links/", "http://other:2/links"),
        ("http://s:1/sink", None, None),
        (None, None, None),
    ],
)
def test_the_base_url_follows_the_events_url(
    events: str | None, given: str | None, base: str | None
) -> None:
    assert hostlink_base(events, given) == base


class Flaky(LinkServer):
    """Answers the first `fail` posts with `status`, then like the real thing."""

    fail: int = 0
    status: int = 503

    async def _messages(self, request: web.Request) -> web.Response:
        if self.fail > 0:
            self.fail -= 1
            await request.read()
            return web.json_response({"error": "not now"}, status=self.status)
        return await super()._messages(request)


@pytest.fixture
async def server() -> AsyncIterator[Flaky]:
    s = Flaky()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def hostlink() -> AsyncIterator[tuple[HostLink, list[dict[str, Any]], list[int]]]:
    down: list[dict[str, Any]] = []
    connects: list[int] = []
    h = HostLink("compute9", down.append, lambda: connects.append(1), backoff_max=0.2)
    h.start()
    yield h, down, connects
    await h.close()


async def test_up_messages_go_in_order_through_failures(
    server: Flaky, hostlink: tuple[HostLink, list[dict[str, Any]], list[int]]
) -> None:
    h, _, _ = hostlink
    h.send({"type": "instance-state", "instance_id": "lost", "state": "started"})
    assert h.up.stats()["dropped"] == 1  # not linked yet: dropped, counted
    server.fail = 3
    await h.configure(f"http://127.0.0.1:{server.port}/v1/hostlink", TOKEN)
    for i in range(250):
        h.send({"type": "instance-state", "instance_id": f"vm{i}", "state": "started"})
    await eventually(lambda: len(server.up) == 250, what="every message")
    assert [m["instance_id"] for _, m in server.up] == [f"vm{i}" for i in range(250)]
    assert {host for host, _ in server.up} == {"compute9"}
    assert h.up.stats()["failures"] == 3

    server.fail, server.status = 1, 400  # refused for good: that batch is dropped
    h.send({"type": "instance-state", "instance_id": "refused", "state": "started"})
    await eventually(lambda: h.up.stats()["dropped"] == 2, what="the refused batch dropped")
    h.send({"type": "instance-state", "instance_id": "after", "state": "started"})
    await eventually(lambda: server.up[-1][1]["instance_id"] == "after", what="later ones")


async def test_the_stream_delivers_reconnects_and_is_replaced(
    server: Flaky, hostlink: tuple[HostLink, list[dict[str, Any]], list[int]]
) -> None:
    h, down, connects = hostlink
    await h.configure(f"http://127.0.0.1:{server.port}/v1/hostlink", TOKEN)
    await eventually(lambda: "compute9" in server.streams and h.connected, what="stream open")
    server.send_down("compute9", {"type": "group-message", "to": ["a"], "payload": "1"})
    await eventually(lambda: down, what="a down message")
    assert down[0]["payload"] == "1" and connects == [1]

    await server.stop()  # the service goes away and comes back on the same port
    await eventually(lambda: not h.connected, what="the stream noticed")
    await server.start()
    await eventually(lambda: len(connects) == 2, what="reconnected")
    server.send_down("compute9", {"type": "group-message", "to": ["a"], "payload": "2"})
    await eventually(lambda: len(down) == 2, what="a message on the new stream")

    other = Flaky()
    await other.start()
    try:
        await h.configure(f"http://127.0.0.1:{other.port}/v1/hostlink", TOKEN)
        await eventually(lambda: "compute9" in other.streams, what="the new service's stream")
        assert len(connects) == 3
    finally:
        await other.stop()


async def test_a_wrong_token_is_refused_and_retried(
    server: Flaky, hostlink: tuple[HostLink, list[dict[str, Any]], list[int]]
) -> None:
    h, _, connects = hostlink
    await h.configure(f"http://127.0.0.1:{server.port}/v1/hostlink", "wrong")
    h.send({"type": "instance-state", "instance_id": "x", "state": "started"})
    await eventually(lambda: h.up.stats()["failures"] >= 2, what="refused posts")
    await eventually(lambda: h.last_error == "StreamError: HTTP 401", what="refused stream")
    assert server.up == [] and connects == []
    await h.configure(f"http://127.0.0.1:{server.port}/v1/hostlink", TOKEN)
    await eventually(lambda: len(server.up) == 1, what="the message, with the right token")
