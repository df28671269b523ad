"""A running lab: hosts answer heartbeats, VMs serve, the API answers and refuses properly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.runner import LabRunner, LabStartError
from opendoctor.lab.spec import LabSpec

from .helpers import heartbeat, refused, served_by

IP_PREFIX = "127.211"


async def test_vms_serve_and_hosts_answer_heartbeats(lab: LabRunner, http: HttpClient) -> None:
    state = json.loads((lab.state_dir / "lab.json").read_text())
    assert state["url"] == lab.url and state["pid"] == lab.pid
    assert state["spec"]["ip_prefix"] == IP_PREFIX

    hosts = await lab.client.host_details()
    assert [h["name"] for h in hosts] == ["compute1", "compute2", "compute3"]
    for i, h in enumerate(hosts, start=1):
        assert h["address"] == f"{IP_PREFIX}.1.{i}"
        assert (h["state"], h["forced_down"], h["enabled"], h["alive"]) == ("up", False, True, True)
        assert isinstance(h["pid"], int)
        assert await heartbeat(h["address"], h["heartbeat_port"]) == h["name"]

    servers = await lab.client.servers()
    assert [s.name for s in servers] == [f"vm{j}" for j in range(1, 7)]
    assert [s.host for s in servers] == ["compute1", "compute2", "compute3"] * 2
    assert [s.project_id for s in servers] == ["project-a", "project-b"] * 3
    assert len({s.id for s in servers}) == 6
    for j, s in enumerate(servers, start=1):
        assert s.status == "ACTIVE"
        assert s.endpoint == f"http://{IP_PREFIX}.2.{j}:8080/"
        assert await served_by(http, s.endpoint) == f"Served by {s.name}\n"
    assert (await lab.client.health())["ok"] is True


async def raw_post(url: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST a body as is (HttpClient would encode it as JSON)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    data = await reader.read()
    writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


async def test_error_bodies(lab: LabRunner, http: HttpClient) -> None:
    vm = (await lab.client.servers())[0]

    async def error_of(method: str, path: str, body: Any = None) -> tuple[int, str]:
        resp = await http.request(method, lab.url + path, json=body)
        answer = resp.json()
        assert set(answer) == {"error"} and answer["error"]["status"] == resp.status
        return resp.status, answer["error"]["message"]

    assert (await error_of("GET", "/servers/nope"))[0] == 404
    assert (await error_of("GET", "/hosts/compute9"))[0] == 404
    assert (await error_of("POST", "/hosts/compute9/fail"))[0] == 404
    assert (await error_of("GET", "/no/such/route"))[0] == 404
    assert (await error_of("POST", "/changes"))[0] == 405
    assert (await error_of("POST", "/hosts/compute1/force-down"))[0] == 400
    status, message = await error_of("POST", "/hosts/compute1/force-down", "yes")
    assert status == 400 and "JSON object" in message
    status, answer = await raw_post(lab.url, "/hosts/compute1/force-down", b"{not json")
    assert status == 400 and "not valid JSON" in answer["error"]["message"]

    resp = await http.post(lab.url + "/hosts/compute1/enabled", json={"enabled": "no"})
    assert resp.status == 400 and "enabled" in resp.json()["error"]["message"]
    resp = await http.post(lab.url + "/servers", json=["not", "an", "object"])
    assert resp.status == 400
    resp = await http.post(lab.url + "/servers", json={"name": "x"})
    assert resp.status == 400 and "project_id" in resp.json()["error"]["message"]
    resp = await http.get(lab.url + "/changes?since=x")
    assert resp.status == 400
    resp = await http.post(lab.url + f"/servers/{vm.id}/reset-state", json={"state": "gone"})
    assert resp.status == 400
    # Many at once: a wrong field refuses the whole request, and nothing is set.
    for body in (
        {"servers": [vm.id], "state": "gone"},
        {"servers": [], "state": "error"},
        {"servers": [vm.id, 7], "state": "error"},
        {"servers": ["x"] * 10_001, "state": "error"},
        {"servers": vm.id, "state": "error"},
    ):
        resp = await http.post(lab.url + "/servers/reset-state", json=body)
        assert resp.status == 400, body
        assert (
            "state" in resp.json()["error"]["message"]
            or "servers" in resp.json()["error"]["message"]
        )
    assert (await lab.client.server(vm.id)).status == "ACTIVE"

    error = await refused(lab.client.evacuate(vm.id), 409)
    assert "force it down" in str(error)
    await refused(lab.client.create_server("vm1", "project-a"), 409)  # name taken
    await refused(lab.client.start(vm.id), 409)  # already running
    await refused(lab.client.migrate(vm.id, vm.host), 409)  # already there


async def test_server_life_cycle(lab: LabRunner, http: HttpClient) -> None:
    client = lab.client
    new = await client.create_server("extra", "project-c", host="compute2")
    assert (new.host, new.status, new.project_id) == ("compute2", "ACTIVE", "project-c")
    assert new.endpoint == f"http://{IP_PREFIX}.2.7:8080/"
    assert await served_by(http, new.endpoint) == "Served by extra\n"

    stopped = await client.stop(new.id)
    assert stopped.status == "SHUTOFF"
    assert await served_by(http, new.endpoint) is None
    started = await client.start(new.id)
    assert started.status == "ACTIVE"
    assert await served_by(http, new.endpoint) == "Served by extra\n"

    moved = await client.migrate(new.id)
    assert moved.host != "compute2" and moved.status == "ACTIVE"
    assert await served_by(http, new.endpoint) == "Served by extra\n"
    moved = await client.migrate(new.id, "compute2")
    assert moved.host == "compute2"

    errored = await client.reset_state(new.id, "error")
    assert errored.status == "ERROR"
    assert (await client.reset_state(new.id, "active")).status == "ACTIVE"

    disabled = await client.set_enabled("compute3", False)
    assert disabled.enabled is False
    auto = await client.create_server("scheduled", "project-a")
    assert auto.host != "compute3"  # the scheduler skips disabled hosts

    await client.delete_server(new.id)
    assert await served_by(http, new.endpoint) is None
    await refused(client.server(new.id), 404)
    assert len(await client.servers()) == 7


async def test_live_migration_moves_a_running_server_only(lab: LabRunner, http: HttpClient) -> None:
    client = lab.client
    vm = (await client.servers())[0]
    assert vm.endpoint is not None
    moved = await client.live_migrate(vm.id)
    assert moved.host != vm.host and moved.status == "ACTIVE"
    assert await served_by(http, vm.endpoint) == f"Served by {vm.name}\n"
    back = await client.live_migrate(vm.id, vm.host)
    assert (back.host, back.status) == (vm.host, "ACTIVE")
    assert (await client.server(vm.id)).host == vm.host

    await refused(client.live_migrate(vm.id, vm.host), 409)  # already there
    await client.stop(vm.id)
    error = await refused(client.live_migrate(vm.id), 409)
    assert "SHUTOFF" in str(error)  # a stopped server is cold-migrated, not live


async def test_change_feed_reports_force_down_and_reset_state(
    lab: LabRunner, http: HttpClient
) -> None:
    client = lab.client
    seq = (await client.health())["seq"]
    # Nothing newer yet: a short long-poll comes back empty.
    latest, changes = await client.changes(seq, wait=0.1)
    assert (latest, changes) == (seq, [])

    vm = (await client.servers())[0]
    await client.force_down("compute1", True)
    await client.reset_state(vm.id, "error")
    latest, changes = await client.changes(seq, wait=5)
    assert latest == seq + 2
    host_change, server_change = changes
    assert host_change.kind == "host" and host_change.op == "upsert"
    assert host_change.host is not None
    assert (host_change.host.name, host_change.host.state) == ("compute1", "down")
    assert host_change.host.forced_down is True
    assert server_change.kind == "server" and server_change.server is not None
    assert (server_change.server.id, server_change.server.status) == (vm.id, "ERROR")

    # A limited read gives the first changes and where to go on from.
    first, (only,) = await client.changes(seq, limit=1)
    assert (first, only.kind) == (seq + 1, "host")
    rest, (then,) = await client.changes(first, limit=5)
    assert (rest, then.kind) == (latest, "server")
    for limit in ("0", "1.5", "100001", "x"):
        resp = await http.get(lab.url + f"/changes?since={seq}&limit={limit}")
        assert resp.status == 400 and "limit" in resp.json()["error"]["message"], limit

    # A repeated request changes nothing, so it reports nothing.
    await client.force_down("compute1", True)
    assert (await client.health())["seq"] == latest


async def test_long_poll_wakes_on_change(lab: LabRunner, http: HttpClient) -> None:
    seq = (await lab.client.health())["seq"]
    waiting = asyncio.create_task(lab.client.changes(seq, wait=30))
    # The poll must still be waiting: nothing changed.
    done, _ = await asyncio.wait({waiting}, timeout=0.2)
    assert not done
    await lab.client.set_enabled("compute2", False)
    latest, changes = await asyncio.wait_for(waiting, 5)
    assert latest == seq + 1 and changes[0].host is not None
    assert changes[0].host.enabled is False


async def test_a_second_lab_on_the_same_addresses_fails_clearly(
    lab: LabRunner, tmp_path: Path
) -> None:
    other = LabRunner(LabSpec(ip_prefix=IP_PREFIX), tmp_path / "other")
    with pytest.raises(LabStartError, match="exited with code 1") as failure:
        await other.start()
    assert "Address already in use" in str(failure.value)
    # The first lab is untouched.
    assert all(h["alive"] for h in await lab.client.host_details())
