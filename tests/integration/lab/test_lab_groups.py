"""Lab server groups (API, spec, CLI, the lab VIM driver) and group messages between
two VMs of one host, routed by their host's supervisor and host link.

`LinkServer` plays the service end of the host link (the real one is the service's).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from typer.testing import CliRunner

from opendoctor.controller.lab import LabDriver
from opendoctor.core.ports import VimError
from opendoctor.heartbeat.groupclient import GroupClient
from opendoctor.lab.client import LabClient, LabError
from opendoctor.lab.runner import LabRunner

from .conftest import LabFactory
from .helpers import eventually, host_vm
from .helpers import run_cli as run
from .linkserver import TOKEN, LinkServer

IP_PREFIX = "127.247"


async def test_server_groups_through_the_api_and_the_driver(lab_factory: LabFactory) -> None:
    lab = await lab_factory(hosts=1, vms=0, vm_mode="inline", heartbeat=False)
    async with LabClient(lab.url) as client:
        for body, field in [
            ({"name": "g", "project_id": "p", "policy": "spread"}, "'policy'"),
            ({"project_id": "p"}, "'name'"),
            ({"name": "g"}, "'project_id'"),
        ]:
            with pytest.raises(LabError) as refused:
                await client._call("POST", "/server-groups", body)
            assert refused.value.status == 400 and field in str(refused.value)
        assert await client.server_groups() == []

        group = await client.create_server_group("ha", "project-a", "anti-affinity")
        a = await client.create_server("a", "project-a", group=group.id)
        b = await client.create_server("b", "project-a", group=group.id)
        for project, gid in [("project-b", group.id), ("project-a", "no-such-group")]:
            with pytest.raises(LabError) as refused:
                await client.create_server("c", project, group=gid)
            assert refused.value.status == 400 and "'group'" in str(refused.value)
        assert [s.name for s in await client.servers()] == ["a", "b"]  # refusals made nothing

        driver = LabDriver(lab.url)
        try:
            (seen,) = await driver.server_groups()
            assert (seen.id, seen.name, seen.project_id, seen.policy) == (
                group.id,
                "ha",
                "project-a",
                "anti-affinity",
            )
            assert seen.members == (a.id, b.id)
            await client.delete_server(a.id)
            assert (await driver.server_groups())[0].members == (b.id,)
            await client.delete_server_group(group.id)
            assert await driver.server_groups() == []
            with pytest.raises(LabError) as refused:
                await client.delete_server_group(group.id)
            assert refused.value.status == 404
            rebuilt = await driver.rebuild(b.id)
            assert rebuilt.id == b.id and rebuilt.status == "ACTIVE"
            with pytest.raises(VimError):
                await driver.rebuild("no-such-server")
        finally:
            await driver.close()


async def test_the_spec_puts_each_projects_vms_in_a_group(lab_factory: LabFactory) -> None:
    lab = await lab_factory(hosts=2, vms=4, server_group="ha", services=["web"], heartbeat=False)
    async with LabClient(lab.url) as client:
        servers = {s.id: s for s in await client.servers()}
        groups = await client.server_groups()
        assert sorted(g.project_id for g in groups) == ["project-a", "project-b"]
        for g in groups:
            assert g.name == "ha" and len(g.members) == 2
            assert {servers[m].project_id for m in g.members} == {g.project_id}
        detail = await client.server_detail(next(iter(servers)))
        assert detail["services"] == [{"name": "web", "healthy": True, "restarts": 0}]


async def app_socket(lab: LabRunner, client: LabClient, server_id: str) -> str:
    """Where the server's guest agent serves its applications, once it has registered."""

    async def registered() -> dict[str, Any] | None:
        vm = await host_vm(lab, client, server_id)
        return vm if vm is not None and vm["heartbeat"] == "ok" else None

    vm = await eventually(registered, what="the server's agent registered")
    return str(vm["app_socket"])


@pytest.mark.parametrize("vm_mode", ["process", "inline"])
async def test_two_vms_of_one_host_exchange_a_group_message(
    lab_factory: LabFactory, link: LinkServer, vm_mode: str
) -> None:
    lab = await lab_factory(hosts=1, vms=0, vm_mode=vm_mode)
    async with LabClient(lab.url) as client:
        await client.set_events_sink(link.events_url, TOKEN)
        await eventually(lambda: "compute1" in link.streams, what="the host's stream")
        group = await client.create_server_group("pair", "project-a")
        a = await client.create_server("a", "project-a", group=group.id)
        b = await client.create_server("b", "project-a", group=group.id)
        link.groups[group.id] = [a.id, b.id]
        await eventually(lambda: {a.id, b.id} <= set(link.where), what="both VMs started")
        sock_a, sock_b = await app_socket(lab, client, a.id), await app_socket(lab, client, b.id)
        loop = asyncio.get_running_loop()
        peer_state = {
            "type": "peer-state",
            "to": [b.id],
            "group": group.id,
            "peer": a.id,
            "peer_name": "a",
            "state": "failed",
            "host": "compute1",
            "reason": "test",
        }

        def talk() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            with GroupClient(sock_a) as one, GroupClient(sock_b) as two:
                one.send("hello from a")
                message = two.receive(timeout=10)
                # b is listening now: the service tells it that a failed.
                loop.call_soon_threadsafe(link.send_down, "compute1", peer_state)
                return message, two.receive(timeout=10)

        got, state = await asyncio.to_thread(talk)
        assert got is not None
        assert {k: got[k] for k in ("type", "from", "group", "payload")} == {
            "type": "message",
            "from": a.id,
            "group": group.id,
            "payload": "hello from a",
        }
        (sent,) = link.of("group-send", "compute1")
        assert sent["from"] == a.id and sent["group"] is None
        assert state is not None and state["type"] == "peer-state"
        assert (state["peer"], state["state"]) == (a.id, "failed")


def test_server_group_and_service_commands(cli: CliRunner) -> None:
    run(cli, "up", "--hosts", "1", "--vms", "0", "--ip-prefix", IP_PREFIX, "--vm-mode", "inline")
    assert "created" in run(cli, "create-server-group", "ha", "--policy", "affinity")
    run(cli, "create-server", "web-1", "--service", "web", "--service", "db", "--group", "ha")
    output = run(cli, "server-groups")
    assert "ha (" in output and "affinity: 1 member(s)" in output
    run(cli, "set-health", "web-1", "--unhealthy", "--service", "db")
    output = run(cli, "services", "web-1")
    assert "web: healthy, 0 restart(s)" in output and "db: unhealthy" in output
    assert "rebuilt on compute1" in run(cli, "rebuild-server", "web-1")
    assert "db: healthy" in run(cli, "services", "web-1")
    run(cli, "delete-server-group", "ha")
    assert "ha (" not in run(cli, "server-groups")
    assert "no server group" in run(cli, "delete-server-group", "ha", code=1)
