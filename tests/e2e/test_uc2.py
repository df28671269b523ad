"""UC2 with real processes: the active VM of a pair fails, its owner switches over."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.demo_uc2 import PROJECT, Traffic, kill_and_switch, setup_pair
from opendoctor.tools.stack import Stack, running_stack
from tests.conftest import eventually

SPEC = LabSpec(hosts=2, vms=0, projects=[PROJECT], ip_prefix="127.64")


def served(traffic: Traffic, name: str) -> int:
    return sum(1 for r in traffic.results if r[1] == 200 and r[2] == f"Served by {name}")


def restarted(s: Stack, fault_id: str) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    """The fault once VM recovery has its server serving again (T11)."""

    async def check() -> dict[str, Any] | None:
        fault: dict[str, Any] = await s.get(f"/v1/faults/{fault_id}?notifications=false")
        return fault if "T11" in fault["trace"] else None

    return check


async def test_killed_active_is_replaced_by_the_standby(tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        pair = await setup_pair(s)
        active, standby = pair["active"], pair["standby"]
        traffic = Traffic(pair["vip"])
        traffic.start()
        try:
            await eventually(lambda: served(traffic, "server1") >= 5, what="clients served")
            assert served(traffic, "server2") == 0
            story = await kill_and_switch(s, pair, traffic)
            await eventually(lambda: served(traffic, "server2") >= 5, what="the standby serving")
            # Meanwhile VM recovery restarts server1 in place; clients go on after that.
            fault = await eventually(restarted(s, story["fault_id"]), what="server1 restarted")
            mark = len(traffic.results)
            await eventually(lambda: len(traffic.results) >= mark + 5, what="more clients")
        finally:
            await traffic.stop()

        trace = story["trace"]
        assert trace["T00"] < trace["T01"] < trace["T09"] < trace["T10"]
        assert "compute.instance.lifecycle.exited" in story["signals"]
        # Once the switch-over is done, every request is answered by the standby: server1,
        # restarted, runs again behind its disabled member and takes no client back.
        after = [r for r in traffic.results if r[0] > trace["T10"] + 0.05]
        assert after and all(r[1] == 200 and r[2] == "Served by server2" for r in after)
        # The owner heard exactly once, about its active server, with the cause.
        received = (await s.http.get(s.consumers[PROJECT].ready + "/received")).json()
        assert [r["instance_id"] for r in received] == [active.id]
        assert received[0]["root_cause"]["instance_id"] == active.id
        # The VIM knows: the failed server was set to error (T03), then restarted in place
        # once its owner had been told (T11); the load balancer switched.
        assert fault["trace"]["T09"] < fault["trace"]["T11"]
        assert fault["trace"]["T03"] < fault["trace"]["T11"]
        [item] = fault["recovery"]
        assert (item["action"], item["result"], item["to_host"]) == ("restart", "ok", "compute1")
        servers = {v.id: v for v in await s.lab.client.servers()}
        assert servers[active.id].status == "ACTIVE"
        members = {m["server_id"]: m for m in await s.lab.client.lb_members()}
        assert members[standby.id]["admin_state_up"] is True
        assert members[active.id]["admin_state_up"] is False


async def test_a_second_failure_before_repair_does_not_switch_to_a_dead_server(
    tmp_path: Path,
) -> None:
    # Before repair: VM recovery would restart server1 within a fraction of a second, so
    # it is off here (as where it is disabled, or has failed).
    no_repair = {"OPENDOCTOR_RECOVERY__VM__ENABLED": "false"}
    async with running_stack(SPEC, tmp_path, service_env=no_repair) as s:
        pair = await setup_pair(s)
        first, second = pair["active"], pair["standby"]
        consumer = s.consumers[PROJECT].ready
        traffic = Traffic(pair["vip"])
        traffic.start()
        try:
            await eventually(lambda: served(traffic, "server1") >= 5, what="clients served")
            await kill_and_switch(s, pair, traffic)  # server1 dies; server2 takes over
            # server2 dies too, before server1 is repaired: its standby is the dead one.
            await s.lab.client.kill_server(second.id)

            async def refused() -> list[dict[str, object]]:
                done = (await s.http.get(consumer + "/switchovers")).json()
                return [d for d in done if d["failed"] == second.id and d["error"]]

            [switch] = await eventually(refused, what="the second switch-over refused")
        finally:
            await traffic.stop()
        assert switch["standby"] == first.id and switch["done"] is None
        assert str(switch["error"]).startswith(f"no healthy standby: {first.id}: ")
        # The dead server was not activated, nor put back behind the load balancer.
        members = {m["server_id"]: m for m in await s.lab.client.lb_members()}
        assert members[first.id]["admin_state_up"] is False


async def test_an_unhealthy_guest_is_switched_over_too(tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        pair = await setup_pair(s)
        active = pair["active"]
        consumer = s.consumers[PROJECT].ready
        await s.lab.client.set_health(active.id, False)

        async def switched() -> list[dict[str, object]]:
            done = (await s.http.get(consumer + "/switchovers")).json()
            return [d for d in done if d["done"]]

        [switch] = await eventually(switched, what="the switch-over")
        assert switch["failed"] == active.id
        received = (await s.http.get(consumer + "/received")).json()
        [notice] = received
        assert notice["root_cause"]["event_type"] == "compute.instance.heartbeat.unhealthy"


def test_the_uc2_demo_command_passes(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "opendoctor", "demo", "uc2", "--json", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["uc2"]
    assert result["ok"] is True
    story = result["switchover"]
    assert story["failed_server"] == "server1" and story["standby"] == "server2"
    assert story["trace"]["T10"] > story["trace"]["T09"] > story["trace"]["T00"]
