"""`GET /v1/stream` against a real service (memory VIM) on a real server.

uvicorn on loopback, not httpx's ASGI transport: that one hands the response over only
once the app has finished it, which a stream never does. What a client sees is what
the browser will: the answer's head as soon as it is subscribed, then each event as
it is published.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from opendoctor.api.app import create_app
from opendoctor.api.stream import KEEPALIVE_FRAME, frames
from opendoctor.app.service import Service
from opendoctor.core.model import Event
from opendoctor.infra.live import Hub
from tests.integration.pipeline.conftest import PROJECT_A, PROJECT_B, lab_vim, settings_for
from tests.unit.api.conftest import BY_TOKEN, TOKENS, TRUSTED

ADMIN = TRUSTED["admin"]
VM1 = "server:00000000-0000-0000-0000-000000000001"  # project-a's, on compute1
VM4 = "server:00000000-0000-0000-0000-000000000004"  # project-b's, on compute1

Sse = tuple[str, dict[str, Any]]  # (the `event:` line, the `data:` line as JSON)


@dataclass
class Live:
    service: Service
    client: httpx.AsyncClient

    @property
    def hub(self) -> Hub:
        return self.service.live


@asynccontextmanager
async def live_service(tmp_path: Path, mode: str = "trusted-headers") -> AsyncIterator[Live]:
    settings = settings_for(tmp_path, api={"auth_mode": mode, "tokens": TOKENS})
    service = Service(settings, vim=lab_vim())
    await service.start()
    # Listening before uvicorn runs: the kernel holds connections until it takes them,
    # so nothing waits for the server to have started.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(service.facade, manage=False), log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield Live(service, client)
    finally:
        # Streams end when the hub closes; uvicorn waits for them before it stops.
        service.live.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        await service.stop()


class Reader:
    """Server-Sent Events, one at a time, from a streamed response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()
        self.last_id = 0

    async def next(self) -> Sse:
        fields: dict[str, str] = {}
        while True:
            line = await anext(self._lines)
            if line and not line.startswith(":"):  # a comment is a keep-alive
                name, _, value = line.partition(": ")
                fields[name] = value
            elif "data" in fields:
                assert int(fields["id"]) > self.last_id  # ids grow
                self.last_id = int(fields["id"])
                return fields["event"], json.loads(fields["data"])

    async def until(self, done: Callable[[list[Sse]], bool], seconds: float = 5) -> list[Sse]:
        seen: list[Sse] = []
        async with asyncio.timeout(seconds):
            while not done(seen):
                seen.append(await self.next())
        return seen


def down(host: str) -> Event:
    return Event("compute.host.down", host, "down", time.time(), monitor="test")


def key_of(sse: Sse) -> str | None:
    key = sse[1].get("key")
    return key if isinstance(key, str) else None


async def test_an_admin_sees_a_host_fault_and_the_host_go_down_at_once(tmp_path: Path) -> None:
    async with (
        live_service(tmp_path) as live,
        live.client.stream("GET", "/v1/stream", headers=ADMIN) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        [subscription] = live.hub.subscribers  # subscribed before the head was sent
        reader = Reader(resp)
        arrived: dict[str, tuple[float, Sse]] = {}
        submitted = time.perf_counter()
        await live.service.submit([down("compute1")])

        def both(seen: list[Sse]) -> bool:
            if seen:
                kind, doc = seen[-1]
                host_down = key_of(seen[-1]) == "host:compute1" and doc["raw_state"] == "down"
                if kind == "fault.opened":
                    arrived.setdefault(kind, (time.perf_counter(), seen[-1]))
                elif kind == "graph.vertex" and host_down:
                    arrived.setdefault("host", (time.perf_counter(), seen[-1]))
            return len(arrived) == 2

        await reader.until(both)
        latency = {what: (at - submitted) * 1000 for what, (at, _) in arrived.items()}
        print(
            f"\nsubmitted -> received over SSE: fault.opened {latency['fault.opened']:.1f} ms, "
            f"host:compute1 down {latency['host']:.1f} ms"
        )
        # The goal is 100 ms; a loaded CI machine gets room.
        assert max(latency.values()) < 1000

        fault = arrived["fault.opened"][1][1]
        assert fault["hostname"] == "compute1" and fault["type"] == "compute.host.down"
        assert fault["status"] == "active" and fault["instance_id"] is None
        assert "T01" in fault["trace"] and fault["id"]
        host = arrived["host"][1][1]
        assert host["type"] == "host" and host["state"] == "ERROR" and host["project"] is None
    # The client is gone: so is its subscription.
    await asyncio.wait_for(subscription.wait_closed(), 5)
    assert live.hub.subscribers == ()


async def test_a_project_sees_its_own_servers_and_nothing_of_the_infrastructure(
    tmp_path: Path,
) -> None:
    async with (
        live_service(tmp_path) as live,
        live.client.stream("GET", "/v1/stream", headers=TRUSTED["a"]) as mine,
        live.client.stream("GET", "/v1/stream", headers=ADMIN) as everything,
    ):
        assert mine.status_code == everything.status_code == 200
        await live.service.submit([down("compute1")])
        admin = Reader(everything)
        [(_, opened)] = await admin.until(lambda seen: bool(seen) and seen[-1][0] == "fault.opened")
        # Until the fault's work is done (owners told, servers evacuated): everything it
        # changed has been published. A marker of project-a's after it closes the look.
        await asyncio.wait_for(live.service.inspector.done[opened["id"]].wait(), 10)
        live.hub.publish("test.marker", {}, PROJECT_A)
        seen = await Reader(mine).until(lambda seen: bool(seen) and seen[-1][0] == "test.marker")
        # The admin saw project-b's server (the filter is the caller's, not the event's).
        rest = await admin.until(lambda seen: bool(seen) and key_of(seen[-1]) == VM4)
        assert rest[-1][1]["project"] == PROJECT_B

    vertices = [doc for kind, doc in seen if kind == "graph.vertex"]
    assert {v["project"] for v in vertices} == {PROJECT_A}
    keys = {key_of(sse) for sse in seen}
    assert VM1 in keys  # its server, hit by the host's fault
    assert VM4 not in keys  # project-b's, on the same host
    assert not [k for k in keys if k is not None and k.startswith(("host:", "alarm:"))]
    assert {kind for kind, _ in seen} <= {"graph.vertex", "graph.removed", "test.marker"}


async def test_only_the_kinds_asked_for(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        bad = await live.client.get("/v1/stream?kinds=fault.opened,nope", headers=ADMIN)
        assert bad.status_code == 400
        assert bad.json()["error"]["errors"][0]["field"] == "kinds"
        url = "/v1/stream?kinds=fault.opened,gap"  # `gap` comes anyway; naming it is no error
        async with live.client.stream("GET", url, headers=ADMIN) as resp:
            await live.service.submit([down("compute2")])
            # Vertices changed first (the alarm, the host): not asked for, not sent.
            kind, doc = await asyncio.wait_for(Reader(resp).next(), 5)
        assert kind == "fault.opened" and doc["hostname"] == "compute2"


@pytest.mark.parametrize("mode", ["trusted-headers", "token"])
async def test_no_identity_is_a_401_and_subscribes_nothing(tmp_path: Path, mode: str) -> None:
    async with live_service(tmp_path, mode) as live:
        resp = await live.client.get("/v1/stream")
        assert resp.status_code == 401
        assert resp.json()["error"]["status"] == 401
        assert live.hub.subscribers == ()
        who = BY_TOKEN["a"] if mode == "token" else TRUSTED["a"]
        async with live.client.stream("GET", "/v1/stream", headers=who) as ok:
            assert ok.status_code == 200


async def test_over_the_cap_is_a_503_until_a_stream_ends(tmp_path: Path) -> None:
    async with live_service(tmp_path) as live:
        live.hub.max_subscribers = 1
        async with live.client.stream("GET", "/v1/stream", headers=ADMIN) as first:
            assert first.status_code == 200
            [subscription] = live.hub.subscribers
            over = await live.client.get("/v1/stream", headers=TRUSTED["a"])
            assert over.status_code == 503
            assert "live subscribers already" in over.json()["error"]["message"]
        await asyncio.wait_for(subscription.wait_closed(), 5)
        async with live.client.stream("GET", "/v1/stream", headers=ADMIN) as again:
            assert again.status_code == 200


def test_the_document_declares_the_stream(tmp_path: Path) -> None:
    service = Service(settings_for(tmp_path), vim=lab_vim())
    operation = create_app(service.facade, manage=False).openapi()["paths"]["/v1/stream"]["get"]
    assert {"200", "400", "401", "503"} <= operation["responses"].keys()
    assert "text/event-stream" in operation["responses"]["200"]["content"]


async def test_frames_keep_alive_batch_and_end_with_the_subscription() -> None:
    hub = Hub()
    subscription = hub.subscribe(lambda project: True)
    stream = frames(subscription, keepalive=0.01)
    assert await anext(stream) == KEEPALIVE_FRAME  # nothing happened for `keepalive`
    hub.publish("fault.opened", {"id": "f1"})
    hub.publish("fault.changed", {"id": "f1"})
    chunk = (await anext(stream)).decode()
    first, second, rest = chunk.split("\n\n")
    assert first.splitlines()[:2] == ["id: 1", "event: fault.opened"]
    assert second.splitlines()[:2] == ["id: 2", "event: fault.changed"]
    assert json.loads(first.splitlines()[2].removeprefix("data: ")) == {"id": "f1"}
    assert rest == ""
    hub.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_a_stream_dropped_before_its_end_unsubscribes() -> None:
    hub = Hub()
    stream = frames(hub.subscribe(lambda project: True), keepalive=60)
    hub.publish("fault.opened", {"id": "f1"})
    await anext(stream)
    await stream.aclose()  # what the server does to a stream whose client left
    assert hub.subscribers == ()
