"""Planned maintenance on the lab with real processes: the service, the lab's hosts and
their BMCs, project A's VNF manager (`opendoctor vnfm`) answering every notice, project B
answering none, clients on the pair's virtual IP.

The layout (`demo_maintenance.maintenance_lab`): server1 (A, active) on compute1, server2
(A, standby) on compute2 behind the lab's load balancer, server3 (B) on compute3; version
2.0 staged on every host, which a power cycle boots into.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from opendoctor.infra.procs import ChildProcess
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.demo import restore
from opendoctor.tools.demo_maintenance import (
    HOST_ACTIONS,
    SILENT,
    Follower,
    MaintenanceLab,
    maintenance_lab,
    start_session,
)
from opendoctor.tools.demo_maintenance_report import request_tally
from opendoctor.tools.demo_uc2 import PROJECT, Traffic
from opendoctor.tools.stack import Stack, running_stack
from tests.conftest import eventually

pytestmark = pytest.mark.slow

SPEC = LabSpec(hosts=3, vms=0, projects=[PROJECT, SILENT], ip_prefix="127.78")
HOSTS = ["compute1", "compute2", "compute3"]
# Owners not answering hold each step this long: short, so the module takes minutes.
FAST = {
    "OPENDOCTOR_MAINTENANCE__REPLY_TIMEOUT": "3",
    "OPENDOCTOR_MAINTENANCE__COMPLETE_WAIT": "2",
    "OPENDOCTOR_MAINTENANCE__MOVE_TIMEOUT": "20",
}
SESSION_WAIT = 90.0


def by_name(items: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {item[key]: item for item in items}


async def lab_hosts(s: Stack) -> dict[str, dict[str, Any]]:
    return by_name(await s.lab.client.host_details(), "name")


async def faults_since(s: Stack, at: float) -> list[dict[str, Any]]:
    return [f for f in await s.get("/v1/faults") if f["started"] >= at]


def notices(status: dict[str, Any], state: str) -> list[dict[str, Any]]:
    return [n for n in status["notices"] if n["state"] == state]


async def test_a_rolling_upgrade_of_every_host_keeps_the_pair_served(tmp_path: Path) -> None:
    async with maintenance_lab(tmp_path, SPEC, FAST) as lab:
        s = lab.s
        traffic = Traffic(lab.vip)
        traffic.start()
        try:
            await eventually(lambda: len(traffic.results) >= 5, what="clients served")
            started = time.time()
            session_id = await start_session(s, HOSTS, actions=HOST_ACTIONS)
            detail = await Follower(s, session_id, started).until_ended(SESSION_WAIT)
            ended = time.time()
        finally:
            await traffic.stop()
        assert detail["state"] == "MAINTENANCE_DONE", detail["error"]

        # Every host came back from its power cycle with the staged version.
        assert {n: h["version"] for n, h in (await lab_hosts(s)).items()} == dict.fromkeys(
            HOSTS, "2.0"
        )
        progress = by_name(detail["host_progress"], "name")
        assert {n: (p["version_before"], p["version_after"]) for n, p in progress.items()} == (
            dict.fromkeys(HOSTS, ("1.0", "2.0"))
        )
        # No VM lost: each is running, off the host it was on (every host was emptied).
        servers = {v.id: v for v in await s.lab.client.servers()}
        assert {v.id: servers[v.id].status for v in lab.servers} == dict.fromkeys(
            [v.id for v in lab.servers], "ACTIVE"
        )
        # Clients of the pair never noticed.
        tally = request_tally(traffic, started, ended)
        assert tally["sent"] >= 100 and tally["failed"] == 0, tally
        assert set(tally["served_by"]) == {"server1", "server2"}

        # Project B never answered: the defaults moved its server.
        projects = by_name(detail["projects"], "project_id")
        assert projects[SILENT]["reply"] is None
        assert projects[SILENT]["defaults"][:2] == ["MAINTENANCE", "PLANNED_MAINTENANCE"]
        moves = [i for i in detail["instances"] if i["project_id"] == SILENT]
        assert [(i["name"], i["action"], i["state"]) for i in moves] == [
            ("server3", "MIGRATE", "done")
        ]
        assert projects[PROJECT]["defaults"] == []
        assert projects[PROJECT]["reply"] == "ACK_MAINTENANCE_COMPLETE"

        # The VNF manager switched its pair away from each host before it was emptied.
        status = await lab.vnfm_status()
        switched = [(w["failed"], w["standby"], w["reason"]) for w in status["switchovers"]]
        assert switched == [
            (lab.active.id, lab.standby.id, "maintenance"),
            (lab.standby.id, lab.active.id, "maintenance"),
        ]
        assert all(w["done"] and not w["error"] for w in status["switchovers"])
        assert status["errors"] == []
        # Every notice was a new one: a server moved twice (off compute1, then off the
        # host it landed on) is told of each move.
        assert status["repeats"] == []
        told = {n["instance_id"] for n in status["instance_action_done"]}
        assert told == {lab.active.id, lab.standby.id}
        # Emptied hosts going down (their power cycles) were no faults.
        assert await faults_since(s, started) == []


async def test_an_owner_that_refuses_ends_the_session_before_anything_moves(
    tmp_path: Path,
) -> None:
    async with maintenance_lab(tmp_path, SPEC, FAST, ["--nack", "MAINTENANCE"]) as lab:
        s = lab.s
        where = {v.id: v.host for v in await s.lab.client.servers()}
        session_id = await start_session(s, HOSTS)
        detail = await Follower(s, session_id, time.time()).until_ended(SESSION_WAIT)

        assert detail["state"] == "MAINTENANCE_FAILED"
        assert detail["error"] == f"refused by {PROJECT}"
        assert detail["instances"] == []
        assert {v.id: v.host for v in await s.lab.client.servers()} == where
        hosts = await lab_hosts(s)
        assert {n: (h["enabled"], h["version"]) for n, h in hosts.items()} == dict.fromkeys(
            HOSTS, (True, "1.0")
        )
        status = await lab.vnfm_status()
        assert [r["state"] for r in status["replies"]][:1] == ["NACK_MAINTENANCE"]
        assert notices(status, "PREPARE_MAINTENANCE") == []


async def test_a_cancelled_session_returns_its_host_in_hand_and_leaves_the_rest(
    tmp_path: Path,
) -> None:
    # The first host stays off a while: the session is cancelled while it is.
    off = [{"plugin": "power_cycle", "type": "host", "metadata": {"off_seconds": 3}}]
    async with maintenance_lab(tmp_path, SPEC, FAST) as lab:
        s = lab.s
        session_id = await start_session(s, HOSTS, actions=off)
        follower = Follower(s, session_id, time.time())

        def first_host_in_maintenance(d: dict[str, Any]) -> bool:
            return any(h["state"] == "in_maintenance" for h in d["host_progress"])

        detail = await follower.until(first_host_in_maintenance, "compute1 off", SESSION_WAIT)
        [first] = [h["name"] for h in detail["host_progress"] if h["state"] == "in_maintenance"]
        assert first == "compute1"
        where = {v.id: v.host for v in await s.lab.client.servers()}
        resp = await s.http.delete(f"{s.api}/v1/maintenance/{session_id}", headers=s.admin)
        assert resp.status == 200, resp.body
        detail = await follower.until_ended(SESSION_WAIT)

        assert detail["state"] == "MAINTENANCE_CANCELLED"
        progress = by_name(detail["host_progress"], "name")
        # The host in hand was finished; the others were not touched.
        assert progress["compute1"]["state"] == "returned"
        assert [progress[h]["state"] for h in ("compute2", "compute3")] == ["waiting", "waiting"]
        hosts = await lab_hosts(s)
        assert {n: h["enabled"] for n, h in hosts.items()} == dict.fromkeys(HOSTS, True)
        assert {n: h["version"] for n, h in hosts.items()} == {
            "compute1": "2.0",
            "compute2": "1.0",
            "compute3": "1.0",
        }
        assert {v.id: v.host for v in await s.lab.client.servers()} == where
        # Its owners were told it is over.
        status = await lab.vnfm_status()
        assert len(notices(status, "MAINTENANCE_COMPLETE")) == 1


async def restart_when(
    lab: MaintenanceLab, follower: Follower, check: Any, what: str
) -> dict[str, Any]:
    """Stop the service once `check(detail)` holds, and start it again on its state."""
    detail = await follower.until(check, what, SESSION_WAIT)
    service = lab.s.service
    await service.stop()
    await service.start()  # a new process, on a new port: s.api follows it
    return detail


def silent_pending(state: str) -> Any:
    """Project A has answered `state`, project B has been asked it and not answered."""

    def check(d: dict[str, Any]) -> bool:
        projects = by_name(d["projects"], "project_id")
        b = projects.get(SILENT)
        return (
            b is not None
            and b["asked"] == state
            and not b["defaulted"]
            and all(p["reply"] for p in projects.values() if p["project_id"] != SILENT)
        )

    return check


async def test_a_session_resumes_after_a_restart_and_asks_no_owner_twice(tmp_path: Path) -> None:
    async with maintenance_lab(tmp_path, SPEC, FAST) as lab:
        s = lab.s
        service = s.service
        assert isinstance(service, ChildProcess) and service.proc is not None
        pid = service.proc.pid
        # compute2 stays out: what moves off compute1 and compute3 lands there or on a host
        # already maintained, never on one still to come.
        session_id = await start_session(s, ["compute1", "compute3"])
        follower = Follower(s, session_id, time.time())
        # Once while the owners are asked to consent (A answered, B not yet)...
        await restart_when(lab, follower, silent_pending("MAINTENANCE"), "B asked MAINTENANCE")
        # ...and once while compute3 is emptied (its owner B not answering).
        detail = await restart_when(
            lab, follower, silent_pending("PLANNED_MAINTENANCE"), "B asked about compute3"
        )
        assert by_name(detail["host_progress"], "name")["compute3"]["state"] == "draining"
        assert service.proc.pid != pid
        detail = await follower.until_ended(SESSION_WAIT)

        assert detail["state"] == "MAINTENANCE_DONE", detail["error"]
        hosts = await lab_hosts(s)
        assert {n: h["version"] for n, h in hosts.items()} == {
            "compute1": "2.0",
            "compute2": "1.0",
            "compute3": "2.0",
        }
        servers = {v.id: v for v in await s.lab.client.servers()}
        assert {v.id: servers[v.id].status for v in lab.servers} == dict.fromkeys(
            [v.id for v in lab.servers], "ACTIVE"
        )
        assert {servers[v.id].host for v in lab.servers} <= {"compute1", "compute2"}
        # Asked once each, whatever the restarts: the notices' ids are stable, and a
        # repeat would be in `repeats`.
        status = await lab.vnfm_status()
        [consent] = notices(status, "MAINTENANCE")
        assert consent["message_id"] not in status["repeats"]
        assert len(notices(status, "PREPARE_MAINTENANCE")) == 1
        assert [r["state"] for r in status["replies"]].count("ACK_MAINTENANCE") == 1
        b = by_name(detail["projects"], "project_id")[SILENT]
        assert b["defaults"][:2] == ["MAINTENANCE", "PLANNED_MAINTENANCE"]


async def test_a_fault_elsewhere_holds_the_session_and_a_host_in_maintenance_is_none(
    tmp_path: Path,
) -> None:
    """compute2 (empty) is maintained first, powered off for 3 s; meanwhile compute3,
    outside the session, fails: its owner is told, and the session waits before
    compute1 until compute3 is back."""
    off = [{"plugin": "power_cycle", "type": "host", "metadata": {"off_seconds": 3}}]
    async with running_stack(SPEC, tmp_path, service_env=FAST) as s:
        client = s.lab.client
        mine = await client.create_server("a1", PROJECT, host="compute1")
        theirs = await client.create_server("b1", SILENT, host="compute3")

        async def known() -> bool:
            ids = {v["id"] for v in await s.get("/v1/servers")}
            return {mine.id, theirs.id} <= ids

        await eventually(known, what="the servers known")
        await s.register_alarms()
        started = time.time()
        session_id = await start_session(s, ["compute1", "compute2"], actions=off)
        follower = Follower(s, session_id, started)

        def compute2_off(d: dict[str, Any]) -> bool:
            return by_name(d["host_progress"], "name")["compute2"]["state"] == "in_maintenance"

        await follower.until(compute2_off, "compute2 in maintenance", SESSION_WAIT)
        await client.fail_host("compute3")

        def held(d: dict[str, Any]) -> bool:
            return d["waiting"] == "fault on compute3"

        detail = await follower.until(held, "the session held by compute3's fault", 30)
        progress = by_name(detail["host_progress"], "name")
        assert (progress["compute2"]["state"], progress["compute1"]["state"]) == (
            "returned",
            "waiting",
        )
        [fault] = [f for f in await faults_since(s, started) if f["instance_id"] is None]
        assert (fault["hostname"], fault["status"]) == ("compute3", "active")

        async def told() -> bool:
            received = (await s.received())[SILENT]
            return any(r["instance_id"] == theirs.id for r in received)

        await eventually(told, what="b1's owner told of the fault")
        await restore(s, "compute3", fault["id"])
        detail = await follower.until_ended(SESSION_WAIT)

        assert detail["state"] == "MAINTENANCE_DONE", detail["error"]
        assert [e for e in detail["log"] if "held: fault on compute3" in e["what"]]
        # Only compute3's: the maintained hosts going down (power cycles) were no faults.
        assert {f["hostname"] for f in await faults_since(s, started)} == {"compute3"}
        servers = {v.id: v for v in await client.servers()}
        assert servers[mine.id].status == "ACTIVE" and servers[mine.id].host != "compute1"
        assert servers[theirs.id].status == "ACTIVE"


def test_the_maintenance_demo_command_passes(tmp_path: Path) -> None:
    command = ["demo", "maintenance", "--json", "--workdir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "opendoctor", *command],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["maintenance"]
    assert result["ok"] is True and result["problems"] == []
    assert result["session"]["state"] == "MAINTENANCE_DONE"
    assert [h["version_now"] for h in result["hosts"]] == ["2.0"] * 3
    assert result["requests"]["sent"] > 0 and result["requests"]["failed"] == 0
    assert {m["decided_by"] for m in result["moves"] if m["project_id"] == SILENT} == {"default"}
    assert len(result["vnfm"]["switchovers"]) == 2
