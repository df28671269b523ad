"""A cut link is not a dead host: the real lab, the real host monitor, the real service.

The monitor loses compute2 on its management path while the host's second path (and
its guests' heartbeats) carry on: the host is reported unreachable, which is a warning,
not a reason to fence it, evacuate it or tell owners their servers failed. Only when
the second path goes silent too is the host down, and then UC1 runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import Stack, running_stack, wait_for

SPEC = LabSpec(hosts=3, vms=6, projects=["project-a", "project-b"], ip_prefix="127.65")


async def processed(s: Stack, type_: str, host: str, status: str) -> dict[str, Any]:
    """Wait until the service has handled the newest such event from the monitor."""

    async def done() -> dict[str, Any] | None:
        for event in await s.get("/v1/events?limit=50"):
            if (event["type"], event["hostname"], event["status"]) == (type_, host, status):
                return event if event["processed"] else None
        return None

    found: dict[str, Any] = await wait_for(f"{type_} {status} for {host}", done, 15)
    return found


async def test_a_cut_link_warns_and_only_losing_every_path_fences(tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        await s.register_alarms()
        before = {v["id"]: v for v in await s.get("/v1/servers")}
        on_host = {i for i, v in before.items() if v["host"] == "compute2"}
        assert on_host

        await s.lab.client.cut_link("compute2")
        event = await processed(s, "compute.host.unreachable", "compute2", "down")
        fault = await s.get(f"/v1/faults/{event['fault_id']}")
        assert fault["type"] == "compute.host.unreachable"

        # Handled, and it stays a warning: the host is not fenced, nothing moved, no
        # owner was told, and its guests (still answering heartbeats) raised nothing.
        hosts = {h.name: h for h in await s.lab.client.hosts()}
        assert not hosts["compute2"].forced_down
        # Not fenced either: its BMC (the stack gives every host one) left it powered.
        powered = {h["name"]: h["alive"] for h in await s.lab.client.host_details()}
        assert powered["compute2"]
        now = {v["id"]: v for v in await s.get("/v1/servers")}
        assert {i for i, v in now.items() if v["host"] == "compute2"} == on_host
        assert all(now[i]["status"] == "ACTIVE" for i in on_host)
        assert fault["recovery"] == [] and fault["notifications"] == []
        assert all(not r for r in (await s.received()).values())
        active = await s.get("/v1/faults?status=active")
        assert [f["id"] for f in active] == [fault["id"]]
        alarms = await s.get("/v1/alarms")
        assert alarms["counts"] == {"WARNING": 1}
        (alarm,) = alarms["alarms"]
        assert alarm["on"] == "host:compute2" and alarm["name"] == "compute.host.unreachable"
        topo = await s.get("/v1/topology?root=host:compute2&depth=0")
        assert topo["vertices"][0]["state"] == "SUBOPTIMAL"

        # The host dies outright: the second path goes silent too, and UC1 follows.
        await s.lab.client.fail_host("compute2")
        await processed(s, "compute.host.down", "compute2", "down")

        async def fenced_and_told() -> bool | None:
            got = {r["instance_id"] for rs in (await s.received()).values() for r in rs}
            hosts = {h.name: h for h in await s.lab.client.hosts()}
            return (on_host <= got and hosts["compute2"].forced_down) or None

        await wait_for("owners told and compute2 fenced", fenced_and_told, 15)
        fault = await s.get(f"/v1/faults/{event['fault_id']}")
        assert fault["type"] == "compute.host.down"
        assert set(fault["signals"]) == {"compute.host.unreachable", "compute.host.down"}
