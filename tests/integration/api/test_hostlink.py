"""The host link (`/v1/hostlink`) on a real server: who may speak for a host, the bounds of
what it posts (each refused with the field named, and nothing of it routed), its rate,
and its stream of down messages (NDJSON, pings, a newer stream replacing the older).

uvicorn on loopback, not httpx's ASGI transport, which hands a response over only once
the app has finished it: a stream never is.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from opendoctor.api import hostlink
from opendoctor.api.app import create_app
from opendoctor.app.guestlink import GuestLinkPart
from opendoctor.app.service import Service
from opendoctor.core.model import ServerGroup
from tests.conftest import MONITOR, eventually
from tests.integration.pipeline.conftest import host_down, lab_vim, settings_for

OTHER = {"X-Auth-Token": "another-monitor-token"}
VM = "00000000-0000-0000-0000-00000000000{}".format  # vmN runs on compute((N-1)%3+1)
GROUP = ServerGroup("g1", "trio", "project-a", "anti-affinity", (VM(1), VM(2), VM(3)))


@dataclass
class Linked:
    service: Service
    client: httpx.AsyncClient

    @property
    def part(self) -> GuestLinkPart:
        assert self.service.guestlink_part is not None
        return self.service.guestlink_part

    async def post(self, host: str, messages: Any, headers: dict[str, str] = MONITOR) -> Any:
        return await self.client.post(
            f"/v1/hostlink/{host}/messages", json={"messages": messages}, headers=headers
        )


@asynccontextmanager
async def linked(tmp_path: Path, **guestlink: Any) -> AsyncIterator[Linked]:
    tokens = tmp_path / "monitors"
    tokens.write_text(f"other {OTHER['X-Auth-Token']}\n")
    tokens.chmod(0o600)
    settings = settings_for(tmp_path, api={"monitor_tokens_file": tokens}, guestlink=guestlink)
    vim = lab_vim()
    vim.groups = {GROUP.id: GROUP}
    service = Service(settings, vim=vim)
    await service.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    app = create_app(service.facade, manage=False)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield Linked(service, client)
    finally:
        service.live.close()  # the host streams end with it: uvicorn waits for them
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        await service.stop()


def send(frm: str, group: str | None = "g1", payload: str = "hello", msg_id: str = "m1") -> Any:
    return {"type": "group-send", "from": frm, "group": group, "payload": payload, "msg_id": msg_id}


def problem(response: httpx.Response) -> tuple[int, str]:
    (error,) = response.json()["error"]["errors"]
    return response.status_code, error["field"]


class Lines:
    """A host's stream, line by line."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        line = await asyncio.wait_for(anext(self._lines), timeout)
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    async def ended(self, timeout: float = 5.0) -> bool:
        try:
            await asyncio.wait_for(anext(self._lines), timeout)
        except StopAsyncIteration:
            return True
        return False


@asynccontextmanager
async def stream(link: Linked, host: str) -> AsyncIterator[Lines]:
    async with link.client.stream("GET", f"/v1/hostlink/{host}/stream", headers=MONITOR) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        await eventually(lambda: link.part.streams.connected(host))
        yield Lines(r)


async def test_a_group_send_reaches_the_peers_hosts_streams(tmp_path: Path) -> None:
    async with (
        linked(tmp_path) as link,
        stream(link, "compute2") as two,
        stream(link, "compute3") as three,
    ):
        r = await link.post("compute1", [send(VM(1))])
        assert r.status_code == 202 and r.json() == {"accepted": 1}
        got = await two.next()
        assert got == {**send(VM(1)), "type": "group-message", "to": [VM(2)]}
        assert (await three.next())["to"] == [VM(3)]


async def test_a_non_member_is_told_so_on_its_hosts_stream(tmp_path: Path) -> None:
    async with linked(tmp_path) as link, stream(link, "compute1") as one:
        r = await link.post("compute1", [send(VM(4), msg_id="x")])  # vm4: in no group
        assert r.status_code == 202
        error = await one.next()
        assert (error["type"], error["code"], error["to"], error["ref"]) == (
            "error",
            "not-member",
            [VM(4)],
            "x",
        )
        assert link.part.router.counts["refused.not_member"] == 1


async def test_pings_and_a_newer_stream_replacing_the_older(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostlink, "PING", 0.1)
    async with linked(tmp_path) as link, stream(link, "compute2") as old:
        assert await old.next() == {"type": "ping"}
        async with stream(link, "compute2") as new:
            assert await old.ended()
            await link.post("compute1", [send(VM(1))])
            got = await new.next()
            while got["type"] == "ping":
                got = await new.next()
            assert got["to"] == [VM(2)]
        assert link.part.streams.counts["replaced"] == 1
        # The host gone, its stream is let go.
        await eventually(lambda: not link.part.streams.connected("compute2"))


async def test_who_may_speak_for_a_host(tmp_path: Path) -> None:
    async with linked(tmp_path, monitors=["tests"]) as link:
        assert problem(await link.post("compute1", [send(VM(1))], headers={})) == (
            401,
            "X-Auth-Token",
        )
        bad = {"X-Auth-Token": "not-a-token"}
        assert problem(await link.post("compute1", [send(VM(1))], headers=bad))[0] == 401
        assert problem(await link.post("nowhere", [send(VM(1))])) == (404, "host")
        assert (await link.post("compute1", [send(VM(1))])).status_code == 202
        # A monitor that guestlink.monitors does not name: not on the host link.
        assert problem(await link.post("compute1", [send(VM(1))], headers=OTHER)) == (
            403,
            "X-Auth-Token",
        )
        r = await link.client.get("/v1/hostlink/compute1/stream", headers=OTHER)
        assert r.status_code == 403
        admin = {"X-Project-Id": "admin", "X-Roles": "admin"}
        status = (await link.client.get("/v1/hostlink", headers=admin)).json()
        assert status["hosts"] == {"compute1": {"monitor": "tests", "connected": False}}
        member = {"X-Project-Id": "project-a", "X-Roles": "member"}
        assert (await link.client.get("/v1/hostlink", headers=member)).status_code == 403


async def test_the_monitor_that_speaks_for_a_host_is_recorded(tmp_path: Path) -> None:
    async with linked(tmp_path) as link:
        admin = {"X-Project-Id": "admin", "X-Roles": "admin"}
        assert (await link.post("compute2", [send(VM(2))], headers=OTHER)).status_code == 202
        assert (await link.client.get("/v1/hostlink", headers=admin)).json()["hosts"] == {
            "compute2": {"monitor": "other", "connected": False}
        }
        # Another token for the same host (a rotation): taken, and the record follows.
        assert (await link.post("compute2", [send(VM(2))])).status_code == 202
        hosts = (await link.client.get("/v1/hostlink", headers=admin)).json()["hosts"]
        assert hosts["compute2"]["monitor"] == "tests"
        # Whatever the monitor, a host speaks only for its own VMs.
        assert (await link.post("compute2", [send(VM(1))], headers=OTHER)).status_code == 202
        assert link.part.router.counts["refused.wrong_host"] == 1


async def test_anonymous_monitors_may_not_speak_for_hosts(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, api={"anonymous_monitors": True})
    service = Service(settings, vim=lab_vim())
    transport = httpx.ASGITransport(app=create_app(service.facade, manage=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://o") as client:
        r = await client.post("/v1/hostlink/compute1/messages", json={"messages": [send(VM(1))]})
    assert problem(r) == (401, "X-Auth-Token")


BAD: list[tuple[Any, int, str]] = [
    ([send(VM(1), payload="é" * 1526)], 400, "messages[0].payload"),  # 3,052 bytes
    ([send(VM(1), msg_id="")], 400, "messages[0].msg_id"),
    ([{**send(VM(1)), "type": "shout"}], 400, "messages[0]"),
    ([{**send(VM(1)), "from": 7}], 400, "messages[0].from"),
    (
        [{"type": "restart-result", "request_id": "r", "ok": "yes", "reason": None}],
        400,
        "messages[0].ok",
    ),
    (
        [{"type": "instance-state", "instance_id": VM(1), "state": "dead", "reason": None}],
        400,
        "messages[0].state",
    ),
    (
        [{"type": "service-state", "instance_id": VM(1), "services": [{"name": "a"}] * 65}],
        400,
        "messages[0].services",
    ),
    ([send(VM(1))] * 101, 413, "messages"),
    ([], 400, "messages"),
    ({"not": "a list"}, 400, "messages"),
]


@pytest.mark.parametrize(("messages", "status", "field"), BAD)
async def test_bounds_refuse_the_whole_request_naming_the_field(
    tmp_path: Path, messages: Any, status: int, field: str
) -> None:
    async with linked(tmp_path) as link, stream(link, "compute2") as two:
        # A good message beside the bad one: nothing of the request is routed.
        body = [send(VM(1)), *messages] if isinstance(messages, list) and messages else messages
        if isinstance(body, list) and len(body) > 1:
            field = field.replace("messages[0]", "messages[1]")
        got_status, got_field = problem(await link.post("compute1", body))
        assert (got_status, got_field) == (status, field)
        assert link.part.router.counts["routed.group-send"] == 0
        await link.post("compute1", [send(VM(1), msg_id="after")])
        got = await two.next()
        while got["type"] == "ping":
            got = await two.next()
        assert got["msg_id"] == "after"


async def test_a_body_too_large_and_malformed_json(tmp_path: Path) -> None:
    async with linked(tmp_path, max_body_bytes=4096) as link:
        big = [send(VM(1), payload="x" * 3000)] * 2
        assert problem(await link.post("compute1", big)) == (413, "body")
        r = await link.client.post(
            "/v1/hostlink/compute1/messages", content=b"{nope", headers=MONITOR
        )
        assert problem(r) == (400, "body")


async def test_a_host_over_its_rate_is_told_when_to_come_back(tmp_path: Path) -> None:
    async with linked(tmp_path, host_rate=1, host_burst=100) as link:
        many = [send(VM(1), msg_id=str(i)) for i in range(100)]
        assert (await link.post("compute1", many)).status_code == 202
        r = await link.post("compute1", many[:10])
        assert problem(r) == (429, "messages")
        assert int(r.headers["Retry-After"]) >= 1
        # Another host has its own rate.
        assert (await link.post("compute2", [send(VM(2))])).status_code == 202


async def test_the_document_declares_every_answer(tmp_path: Path) -> None:
    async with linked(tmp_path) as link:
        paths = (await link.client.get("/openapi.json")).json()["paths"]
    post = paths["/v1/hostlink/{host}/messages"]["post"]
    assert {"202", "400", "401", "403", "404", "413", "429", "503"} <= set(post["responses"])
    assert "messages" in json.dumps(post["requestBody"])
    get = paths["/v1/hostlink/{host}/stream"]["get"]
    assert {"200", "401", "403", "404", "503"} <= set(get["responses"])
    assert "application/x-ndjson" in get["responses"]["200"]["content"]


async def test_the_guest_link_restarts_a_service_through_the_hosts_stream(
    tmp_path: Path,
) -> None:
    async with linked(tmp_path) as link, stream(link, "compute3") as three:
        assert link.service.guestlink is not None
        service_state = {
            "type": "service-state",
            "instance_id": VM(3),
            "services": [{"name": "db", "healthy": False, "reason": "exit 1"}],
        }
        assert (await link.post("compute3", [service_state])).status_code == 202
        assert link.service.guestlink.services(VM(3))["db"].healthy is False
        restarting = asyncio.create_task(link.service.guestlink.restart_service(VM(3), "db", 5))
        ask = await three.next()
        while ask["type"] == "ping":
            ask = await three.next()
        assert (ask["type"], ask["to"], ask["service"]) == ("restart-service", [VM(3)], "db")
        result = {"type": "restart-result", "request_id": ask["request_id"], "ok": True}
        assert (await link.post("compute3", [{**result, "reason": None}])).status_code == 202
        await asyncio.wait_for(restarting, 5)


async def test_a_host_fault_unfenced_is_never_failed_to_the_peers(tmp_path: Path) -> None:
    """The in-memory VIM's hosts have no fence device, and recovery evacuates them
    unfenced here: their VMs go unreachable, then migrated and started, never failed."""
    async with linked(tmp_path) as link, stream(link, "compute1") as one:
        r = await link.client.put("/events", json=[host_down("compute2")], headers=MONITOR)
        assert r.status_code == 202
        states: list[str] = []
        while "started" not in states:
            got = await one.next(10)
            if got["type"] == "peer-state" and got["peer"] == VM(2):
                assert got["to"] == [VM(1)]
                states.append(got["state"])
        assert states == ["unreachable", "migrated", "started"]
