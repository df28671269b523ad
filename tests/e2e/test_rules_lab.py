"""The built-in templates on the real lab: a switch and a power feed the VIM does not know
(they come from the topology file) fail, and the owners behind them hear it from their
own consumer processes, with the failed switch or feed as root cause."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import Stack, StackError, running_stack, wait_for
from tests.e2e.test_uc1 import cli_json

SPEC = LabSpec(hosts=3, vms=6, projects=["project-a", "project-b"], ip_prefix="127.66")

TOPOLOGY = """
entities:
  - {type: switch, id: tor-1, state: up}
  - {type: power_feed, id: pdu-b, state: up}
  - {type: rack, id: rack-3, state: up}
relations:
  - {source: "switch:tor-1", target: "host:compute1", label: connects}
  - {source: "power_feed:pdu-b", target: "rack:rack-3", label: powers}
  - {source: "rack:rack-3", target: "host:compute3", label: contains}
"""


async def resource_event(s: Stack, type_: str, id_: str, status: str) -> None:
    body = {
        "type": "resource.down",
        "details": {"resource_type": type_, "resource_id": id_, "status": status},
    }
    resp = await s.http.post(s.api + "/events", json=body, headers=s.monitor)
    if resp.status != 202:
        raise StackError(f"event refused: HTTP {resp.status} {resp.body[:300]!r}")


async def told(s: Stack, servers: set[str]) -> dict[str, dict[str, Any]]:
    async def check() -> dict[str, dict[str, Any]] | None:
        got = {r["instance_id"]: r for rs in (await s.received()).values() for r in rs}
        return got if servers <= got.keys() else None

    found: dict[str, dict[str, Any]] = await wait_for("owners told", check, 15)
    return found


async def test_switch_and_power_feed_failures_reach_the_owners_behind_them(
    tmp_path: Path,
) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    env = {"OPENDOCTOR_INSPECTOR__TOPOLOGY_FILE": str(topology)}
    async with running_stack(SPEC, tmp_path, env) as s:
        alarms = await s.register_alarms()
        servers = await s.get("/v1/servers")
        behind_switch = {v["id"] for v in servers if v["host"] == "compute1"}
        behind_feed = {v["id"] for v in servers if v["host"] == "compute3"}

        # The switch: owners on compute1 are told; compute1 itself is left running.
        await resource_event(s, "switch", "tor-1", "down")
        got = await told(s, behind_switch)
        assert got.keys() == behind_switch
        for note in got.values():
            assert note["state"] == "error"
            assert note["root_cause"]["alarm_resource"] == "switch:tor-1"
        hosts = {h.name: h for h in await s.lab.client.hosts()}
        assert not hosts["compute1"].forced_down
        victim = sorted(behind_switch)[0]
        why = await cli_json(s.api, "rca", f"instance.unreachable@server:{victim}")
        assert why["root_cause"]["on"]["key"] == "switch:tor-1"
        assert [c["name"] for c in why["causes"]] == ["host.uplink_down", "resource.down"]
        await resource_event(s, "switch", "tor-1", "up")
        await s.rearm(alarms)
        for consumer in s.consumers.values():
            await s.http.delete(consumer.ready + "/received")

        # The power feed: the rack loses power, compute3 is fenced and its servers are
        # evacuated; their owners hear with the feed as root cause.
        await resource_event(s, "power_feed", "pdu-b", "down")
        got = await told(s, behind_feed)
        assert got.keys() == behind_feed
        for note in got.values():
            assert note["root_cause"]["alarm_resource"] == "power_feed:pdu-b"

        async def evacuated() -> bool | None:
            hosts = {h.name: h for h in await s.lab.client.hosts()}
            moved = {v.id: v for v in await s.lab.client.servers() if v.id in behind_feed}
            done = all(v.host != "compute3" and v.status == "ACTIVE" for v in moved.values())
            return (hosts["compute3"].forced_down and done) or None

        await wait_for("compute3 fenced and its servers evacuated", evacuated, 60)
