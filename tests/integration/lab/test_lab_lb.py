"""The lab load balancer: a real reverse proxy on a VIP, round robin over enabled members."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.runner import LabRunner

from .conftest import LabFactory
from .helpers import refused
from .sink import free_port

IP_PREFIX = "127.219"
ECHO_ADDRESS = f"{IP_PREFIX}.9.1"


async def ask(http: HttpClient, url: str) -> tuple[int, str]:
    resp = await http.get(url)
    return resp.status, resp.body.decode()


def vip_url(pool: dict[str, Any]) -> str:
    return f"http://{pool['vip_address']}:{pool['vip_port']}/"


@pytest.fixture
async def lab(lab_factory: LabFactory) -> LabRunner:
    return await lab_factory(hosts=2, vms=3)


async def test_round_robin_over_enabled_members(lab: LabRunner, http: HttpClient) -> None:
    client = lab.client
    servers = await client.servers()
    pool = await client.create_pool("web", [s.id for s in servers])
    assert (pool["vip_address"], pool["vip_port"]) == (f"{IP_PREFIX}.250.1", 8080)
    assert pool["lb_method"] == "ROUND_ROBIN" and pool["name"] == "web"
    members = pool["members"]
    assert [m["server_name"] for m in members] == ["vm1", "vm2", "vm3"]
    for m, s in zip(members, servers, strict=True):
        assert s.endpoint == f"http://{m['address']}:{m['port']}/"
        assert (m["pool_id"], m["server_id"], m["admin_state_up"]) == (pool["id"], s.id, True)
        assert m["status"] == "ACTIVE"
    assert await client.lb_pools() == [await client.lb_pool(pool["id"])]

    vip = vip_url(pool)
    # The HttpClient keeps its connection to the VIP alive between requests.
    answers = [await ask(http, vip) for _ in range(6)]
    assert answers == [(200, f"Served by vm{i}\n") for i in (1, 2, 3, 1, 2, 3)]

    vm2 = members[1]
    changed = await client.set_member(vm2["id"], False)
    assert (changed["admin_state_up"], changed["status"]) == (False, "INACTIVE")
    names = [(await ask(http, vip))[1] for _ in range(4)]
    assert sorted(names) == ["Served by vm1\n"] * 2 + ["Served by vm3\n"] * 2

    for m in members:
        await client.set_member(m["id"], False)
    status, text = await ask(http, vip)
    assert status == 503 and "no enabled member" in text
    await client.set_member(vm2["id"], True)
    assert [await ask(http, vip) for _ in range(2)] == [(200, "Served by vm2\n")] * 2

    listed = await client.lb_members(pool=pool["id"])
    assert [m["admin_state_up"] for m in listed] == [False, True, False]
    assert listed[1]["requests"] >= 4
    stats = (await client.lb_pool(pool["id"]))["stats"]
    assert (stats["requests"], stats["no_member"], stats["upstream_errors"]) == (13, 1, 0)

    # Standby members answer what their application answers.
    await client.set_role(servers[1].id, "standby")
    assert await ask(http, vip) == (503, "standby: vm2\n")


async def test_dead_member_gives_502_and_the_owner_switches(
    lab: LabRunner, http: HttpClient
) -> None:
    client = lab.client
    vm1, vm2, _ = await client.servers()
    await client.set_role(vm2.id, "standby")
    pool = await client.create_pool(
        "pair", [{"server_id": vm1.id}, {"server_id": vm2.id, "admin_state_up": False}], 8081
    )
    vip = vip_url(pool)
    assert vip.endswith(":8081/")
    assert await ask(http, vip) == (200, "Served by vm1\n")

    await client.kill_server(vm1.id)
    status, text = await ask(http, vip)
    assert status == 502 and "refused" in text.lower()
    assert (await ask(http, vip))[0] == 502  # no retry elsewhere: vm2 is disabled
    member = (await client.lb_members(pool["id"]))[0]
    assert (member["failures"], member["status"]) == (2, "ERROR")
    assert (await client.lb_pool(pool["id"]))["stats"]["upstream_errors"] == 2

    # What the owner does in UC2: activate the standby, switch the members.
    await client.set_role(vm2.id, "active")
    one, two = pool["members"]
    await asyncio.gather(client.set_member(two["id"], True), client.set_member(one["id"], False))
    assert await ask(http, vip) == (200, "Served by vm2\n")


async def test_members_follow_an_evacuated_server(lab: LabRunner, http: HttpClient) -> None:
    client = lab.client
    vm1 = next(s for s in await client.servers() if s.host == "compute1")
    pool = await client.create_pool("one", [{"server_name": vm1.name}])
    other = await client.create_pool("other", [])
    assert other["vip_address"] == f"{IP_PREFIX}.250.2"
    assert await ask(http, vip_url(other)) == (503, "no enabled member in pool other\n")
    vip = vip_url(pool)
    assert await ask(http, vip) == (200, f"Served by {vm1.name}\n")

    await client.fail_host("compute1")
    assert (await ask(http, vip))[0] == 502
    await client.force_down("compute1", True)
    moved = await client.evacuate(vm1.id)
    assert moved.host == "compute2"
    assert await ask(http, vip) == (200, f"Served by {vm1.name}\n")
    (member,) = await client.lb_members(pool["id"])
    assert (member["server_id"], member["status"]) == (vm1.id, "ACTIVE")
    assert moved.endpoint == f"http://{member['address']}:{member['port']}/"

    # Bad requests are refused; a deleted pool's VIP stops answering.
    await refused(client.create_pool("bad", [{"server_id": "nope"}]), 404)
    await refused(client.create_pool("bad", [{"address": "127.0.0.1"}]), 400)
    await refused(client.set_member("nope", True), 404)
    await refused(client.lb_members("nope"), 404)
    await client.delete_pool(pool["id"])
    await refused(client.delete_pool(pool["id"]), 404)
    assert [p["name"] for p in await client.lb_pools()] == ["other"]
    with pytest.raises(OSError):
        await asyncio.open_connection(pool["vip_address"], pool["vip_port"])


# ----- the proxy's HTTP, against an upstream that echoes what it got ---------------------


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == "/chunked":
            resp = web.StreamResponse(headers={"X-Upstream": "yes"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for part in (b"one ", b"two ", b"three"):
                await resp.write(part)
            await resp.write_eof()
            return resp
        answer = {
            "method": request.method,
            "path": request.path_qs,
            "body": body.decode(),
            "headers": dict(request.headers),
        }
        return web.json_response(answer, status=201 if request.method == "POST" else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port(ECHO_ADDRESS)
    await web.TCPSite(runner, ECHO_ADDRESS, port).start()
    yield port
    await runner.cleanup()


async def exchange(address: str, port: int, raw: bytes, answers: int) -> list[tuple[bytes, bytes]]:
    """Send raw bytes on one connection; read `answers` Content-Length framed answers."""
    reader, writer = await asyncio.open_connection(address, port)
    writer.write(raw)
    got = []
    for _ in range(answers):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        got.append((head, await reader.readexactly(length)))
    writer.close()
    return got


async def test_proxy_forwards_requests_faithfully(
    lab: LabRunner, http: HttpClient, echo: int
) -> None:
    pool = await lab.client.create_pool("echo", [{"address": ECHO_ADDRESS, "port": echo}])
    assert pool["members"][0]["server_id"] is None
    vip = vip_url(pool)

    resp = await http.request(
        "POST", vip + "a/b?x=1&y=2", json={"k": "v"}, headers={"X-Custom": "kept"}
    )
    assert resp.status == 201
    seen = resp.json()
    assert (seen["method"], seen["path"], json.loads(seen["body"])) == (
        "POST",
        "/a/b?x=1&y=2",
        {"k": "v"},
    )
    assert seen["headers"]["X-Custom"] == "kept"
    assert seen["headers"]["Host"] == f"{pool['vip_address']}:{pool['vip_port']}"
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"

    # Chunked both ways, two requests on one kept-alive connection, then HTTP/1.0.
    host, port = pool["vip_address"], pool["vip_port"]
    raw = (
        b"PUT /up HTTP/1.1\r\nHost: vip\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        b"GET /chunked HTTP/1.1\r\nHost: vip\r\n\r\n"
    )
    (put_head, put_body), (get_head, get_body) = await exchange(host, port, raw, 2)
    assert put_head.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive" in put_head
    assert json.loads(put_body)["body"] == "hello world"
    assert get_head.startswith(b"HTTP/1.1 200") and b"X-Upstream: yes" in get_head
    assert b"chunked" not in get_head.lower() and get_body == b"one two three"

    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /old HTTP/1.0\r\n\r\n")
    data = await reader.read()  # HTTP/1.0 without keep-alive: the proxy closes after one
    writer.close()
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["path"] == "/old"

    resp = await http.request("HEAD", vip + "h")
    assert (resp.status, resp.body) == (200, b"")
    resp = await http.request("DELETE", vip + "thing")
    assert resp.status == 200 and resp.json()["method"] == "DELETE"

    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"NONSENSE\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 400")
    writer.close()
