"""A dead host is fenced, then its servers evacuated by its failover segment's recovery
method: the real lab (hosts with capacity, a Redfish BMC each), the real service, the
segments made through the Masakari-compatible API as an operator would.

Every host runs 10 vcpus. compute1 holds four 2-vcpu servers that opted in (HA_Enabled)
and one 1-vcpu server that did not; compute2 and compute3, the segment's ordinary hosts,
have 4 vcpus free each (two servers); compute4, the reserved host, disabled until
needed, has 5 free (two servers).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.demo import fail_and_recover, restore
from opendoctor.tools.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.slow

SPEC = LabSpec(hosts=4, vms=0, ip_prefix="127.66", host_vcpus=10, heartbeat=False)
ORDINARY, RESERVED = ("compute2", "compute3"), "compute4"
FILLERS = {"compute2": 6, "compute3": 6, "compute4": 5}  # vcpus already taken


async def call(s: Stack, method: str, path: str, body: Any = None) -> Any:
    resp = await s.http.request(method, s.api + path, json=body, headers=s.admin)
    assert resp.ok, f"{method} {path}: HTTP {resp.status} {resp.body[:300]!r}"
    return resp.json() if resp.body else None


async def make_segment(s: Stack, method: str) -> str:
    seg = await call(
        s,
        "POST",
        "/instance-ha/v1/segments",
        {
            "segment": {
                "name": f"seg-{method}",
                "recovery_method": method,
                "service_type": "COMPUTE",
            }
        },
    )
    seg_id: str = seg["segment"]["uuid"]
    for name in ("compute1", *ORDINARY, RESERVED):
        host = {
            "name": name,
            "type": "COMPUTE",
            "control_attributes": "SSH",
            "reserved": name == RESERVED,
        }
        await call(s, "POST", f"/instance-ha/v1/segments/{seg_id}/hosts", {"host": host})
    return seg_id


async def drop_segment(s: Stack, seg_id: str) -> None:
    hosts = await call(s, "GET", f"/instance-ha/v1/segments/{seg_id}/hosts")
    for host in hosts["hosts"]:
        await call(s, "DELETE", f"/instance-ha/v1/segments/{seg_id}/hosts/{host['uuid']}")
    await call(s, "DELETE", f"/instance-ha/v1/segments/{seg_id}")


async def boot(s: Stack, method: str) -> dict[str, str]:
    """compute1's five servers: vm1..vm4 opted in, with HA_Priority 9..6 (vm4 first),
    vm5 not; name -> id."""
    made = {}
    for i in range(1, 6):
        opted = i < 5
        server = await s.lab.client.create_server(
            f"{method}-vm{i}",
            "project-a",
            host="compute1",
            metadata={"HA_Enabled": "True", "HA_Priority": str(10 - i)} if opted else {},
            vcpus=2 if opted else 1,
        )
        made[server.name] = server.id
    await known(s, set(made.values()))
    return made


async def known(s: Stack, ids: set[str]) -> None:
    async def all_known() -> bool:
        return ids <= {v["id"] for v in await s.get("/v1/servers")}

    await wait_for("the service to know the servers", all_known, 15)


async def clean(s: Stack, made: dict[str, str]) -> None:
    for server_id in made.values():
        await s.lab.client.delete_server(server_id)
    await s.lab.client.set_enabled(RESERVED, False)


# Where each method puts compute1's four opted-in servers (vm5 stays where it was).
EXPECTED = {
    "auto": {"compute2": 2, "compute3": 2},
    "reserved_host": {"compute4": 2},  # vm2 and vm1, last by priority, fit nowhere allowed
    "auto_priority": {"compute2": 2, "compute3": 2},  # the reserved host is not needed
    "rh_priority": {"compute4": 2, "compute2": 1, "compute3": 1},
}


async def test_each_recovery_method_fences_first_then_places_servers_by_its_rule(
    tmp_path: Path,
) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        fillers = []
        for host, vcpus in FILLERS.items():
            filler = await s.lab.client.create_server(
                f"filler-{host}", "project-b", host, vcpus=vcpus
            )
            fillers.append(filler.id)
        await known(s, set(fillers))
        await s.lab.client.set_enabled(RESERVED, False)
        for method, expected in EXPECTED.items():
            seg_id = await make_segment(s, method)
            made = await boot(s, method)
            story = await fail_and_recover(s, "compute1")
            trace, items = story["trace"], story["recovery"]
            # Fenced (the BMC confirmed the power off) before any server was moved.
            assert "T05" in trace and all(
                i["started"] >= trace["T05"] for i in items if i["started"]
            )
            assert {i["method"] for i in items} == {method}
            names = {v: k for k, v in made.items()}
            recovered = {names[i["server_id"]] for i in items}
            assert recovered == {f"{method}-vm{i}" for i in range(1, 5)}, method
            placed = Counter(i["to_host"] for i in items if i["result"] == "ok")
            assert placed == expected, method
            failed = [i for i in items if i["result"] != "ok"]
            if method == "reserved_host":
                # The lowest priorities last: vm2 and vm1 are left, without room.
                assert sorted(names[i["server_id"]] for i in failed) == [
                    f"{method}-vm1",
                    f"{method}-vm2",
                ]
                assert all(i["error"].startswith("no room:") for i in failed)
            else:
                assert failed == []
            hosts = {h.name: h for h in await s.lab.client.hosts()}
            assert hosts[RESERVED].enabled == ("compute4" in expected), method
            if "compute4" in expected:
                members = await call(s, "GET", f"/instance-ha/v1/segments/{seg_id}/hosts")
                reserved = {h["name"]: h["reserved"] for h in members["hosts"]}
                assert reserved[RESERVED] is False  # taken into use: reserved no more
            # Evacuations went in priority order (lower HA_Priority first).
            started = sorted((i["started"], names[i["server_id"]]) for i in items if i["started"])
            assert [n for _, n in started] == sorted(
                (n for _, n in started), key=lambda n: -int(n[-1])
            )
            await restore(s, "compute1", story["fault_id"])
            await clean(s, made)
            await drop_segment(s, seg_id)
