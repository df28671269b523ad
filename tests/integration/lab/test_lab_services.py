"""Named services in lab VMs: per-service health through the guest agent, restarts
through the host link, and rebuilds.

The service end of the host link is `LinkServer` (the real one is the service's); the
hosts find it as they find the service: from the events sink's URL.
"""

from __future__ import annotations

from typing import Any

import pytest

from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.client import LabClient, LabError
from opendoctor.lab.runner import LabRunner

from .conftest import LabFactory
from .helpers import eventually, host_vm, served_by
from .linkserver import TOKEN, LinkServer

IP_PREFIX = "127.246"


def states_of(link: LinkServer, instance_id: str) -> list[list[dict[str, Any]]]:
    return [m["services"] for m in link.of("service-state") if m["instance_id"] == instance_id]


def unhealthy_events(link: LinkServer, instance_id: str, status: str) -> list[dict[str, Any]]:
    return [
        e
        for e in link.events
        if e["type"] == "compute.instance.heartbeat.unhealthy"
        and e["details"]["instance_id"] == instance_id
        and e["details"]["status"] == status
    ]


@pytest.mark.parametrize("vm_mode", ["process", "inline"])
async def test_a_failed_service_is_reported_and_restarted_through_the_agent(
    lab_factory: LabFactory, link: LinkServer, vm_mode: str
) -> None:
    lab = await lab_factory(hosts=1, vms=0, vm_mode=vm_mode)
    async with LabClient(lab.url) as client:
        status = await client.set_events_sink(link.events_url, TOKEN)
        assert status["hostlink_url"] == f"http://127.0.0.1:{link.port}/v1/hostlink"
        server = await client.create_server("web-1", "project-a", services=["web", "db"])
        detail = await client.server_detail(server.id)
        assert detail["services"] == [
            {"name": "web", "healthy": True, "restarts": 0},
            {"name": "db", "healthy": True, "restarts": 0},
        ]
        await eventually(lambda: states_of(link, server.id), what="the services' first state")
        assert link.of("instance-state")[0] == {
            "type": "instance-state",
            "instance_id": server.id,
            "state": "started",
            "reason": "process started",
        }

        await client.set_health(server.id, False, service="db")
        down = await eventually(
            lambda: unhealthy_events(link, server.id, "down"), what="unhealthy event"
        )
        reason = "unhealthy service: db: db on web-1 reports itself unhealthy"
        assert down[0]["details"]["reason"] == reason
        last = states_of(link, server.id)[-1]
        assert [s["healthy"] for s in last] == [True, False]
        assert (await client.server_detail(server.id))["services"][1]["healthy"] is False
        with pytest.raises(LabError) as refused:
            await client.set_health(server.id, False, service="cache")
        assert refused.value.status == 400 and "service" in str(refused.value)

        link.send_down(
            "compute1",
            {
                "type": "restart-service",
                "to": [server.id],
                "service": "db",
                "request_id": "restart-1",
                "timeout": 5,
            },
        )
        result = await eventually(lambda: link.of("restart-result"), what="restart result")
        assert result[0] == {
            "type": "restart-result",
            "request_id": "restart-1",
            "ok": True,
            "reason": None,
        }
        await eventually(lambda: unhealthy_events(link, server.id, "up"), what="cleared")
        detail = await client.server_detail(server.id)
        assert detail["services"][1] == {"name": "db", "healthy": True, "restarts": 1}
        assert [s["healthy"] for s in states_of(link, server.id)[-1]] == [True, True]


async def test_rebuild_recreates_the_vm_on_its_host(
    lab_factory: LabFactory, link: LinkServer, http: HttpClient
) -> None:
    lab = await lab_factory(hosts=2, vms=0)
    async with LabClient(lab.url) as client:
        await client.set_events_sink(link.events_url, TOKEN)
        server = await client.create_server("app-1", "project-a", "compute1", services=["app"])
        await client.set_health(server.id, False, service="app")
        pid = await vm_pid(lab, client, server.id)
        rebuilt = await client.rebuild(server.id)
        assert (rebuilt.id, rebuilt.host, rebuilt.endpoint) == (
            server.id,
            "compute1",
            server.endpoint,
        )
        assert rebuilt.status == "ACTIVE"
        detail = await client.server_detail(server.id)
        assert detail["rebuilds"] == 1
        assert detail["services"] == [{"name": "app", "healthy": True, "restarts": 0}]
        assert await vm_pid(lab, client, server.id) != pid
        assert await served_by(http, server.endpoint or "") == "Served by app-1\n"

        def states() -> list[str]:
            return [m["state"] for m in link.of("instance-state") if m["instance_id"] == server.id]

        await eventually(lambda: len(states()) >= 3, what="instance states")
        assert states() == ["started", "stopped", "started"]

        await client.fail_host("compute1")
        with pytest.raises(LabError) as refused:
            await client.rebuild(server.id)
        assert refused.value.status == 409 and "evacuate" in str(refused.value)


async def vm_pid(lab: LabRunner, client: LabClient, server_id: str) -> int:
    vm = await host_vm(lab, client, server_id)
    assert vm is not None
    return int(vm["pid"])
