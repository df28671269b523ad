"""The sample VNF manager in planned maintenance: what it answers to each notice, and
what it does first on the lab (a pair switched over, a server given up and created again).

opendoctor's part is played by a small HTTP server here (`FakeOpendoctor`): the alarms
API, a session's instance list and reply URL, the constraints API. The lab is the real
one where the manager acts on it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from opendoctor.cli import app as cli_app
from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from opendoctor.tools import vnfm
from opendoctor.tools.demo_uc2 import create_pair
from opendoctor.tools.vnfm_api import VnfmConfig
from opendoctor.tools.vnfm_manager import VnfManager
from tests.conftest import eventually

PROJECT = "project-a"
OTHER = "project-b"
IDENTITY = {"x-project-id": PROJECT, "x-user-id": "vnfm", "x-roles": "member"}
ALL_ACTIONS = json.dumps(["MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"])


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _identity(request: web.Request) -> dict[str, str]:
    return {k: request.headers.get(k, "") for k in IDENTITY}


@dataclass
class FakeOpendoctor:
    """opendoctor as a project's manager sees it, recording what it was asked."""

    url: str = ""
    instance_ids: list[str] = field(default_factory=list)
    alarms: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    lists: list[tuple[dict[str, str], Any]] = field(default_factory=list)  # instance list GETs
    replies: list[dict[str, Any]] = field(default_factory=list)
    reply_headers: list[dict[str, str]] = field(default_factory=list)
    constraints: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Called as each reply arrives: what the world looks like when the answer comes.
    on_reply: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
    seen_at_reply: list[dict[str, Any]] = field(default_factory=list)
    hold_lists: asyncio.Event | None = None  # set: instance lists are answered

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/alarms", self._create_alarm)
        app.router.add_delete("/v2/alarms/{id}", self._delete_alarm)
        app.router.add_get("/v1/maintenance/{session}/{project}", self._list)
        app.router.add_put("/v1/maintenance/{session}/{project}", self._reply)
        app.router.add_put("/v1/{kind:instance_group|instance}/{id}", self._constraint)
        app.router.add_delete("/v1/instance/{id}", self._delete_constraint)
        return app

    def session_url(self, session: str, project: str = PROJECT) -> str:
        return f"{self.url}/v1/maintenance/{session}/{project}"

    async def _create_alarm(self, request: web.Request) -> web.Response:
        self.alarms.append((_identity(request), await request.json()))
        return web.json_response({"alarm_id": f"alarm-{len(self.alarms)}"}, status=201)

    async def _delete_alarm(self, request: web.Request) -> web.Response:
        self.deleted.append(request.match_info["id"])
        return web.Response(status=204)

    async def _list(self, request: web.Request) -> web.Response:
        self.lists.append((_identity(request), await request.json()))
        if self.hold_lists is not None:
            await self.hold_lists.wait()
        return web.json_response({"instance_ids": self.instance_ids})

    async def _reply(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.on_reply is not None:
            self.seen_at_reply.append(await self.on_reply(body))
        self.reply_headers.append(_identity(request))
        self.replies.append(body)
        return web.json_response({})

    async def _constraint(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['kind']}/{request.match_info['id']}"
        self.constraints[key] = await request.json()
        return web.json_response(self.constraints[key])

    async def _delete_constraint(self, request: web.Request) -> web.Response:
        self.constraints.pop(f"instance/{request.match_info['id']}", None)
        return web.Response(status=204)


@dataclass
class Vnfm:
    """A running manager (`manager` if it runs in the test's hands), and what to send it."""

    url: str
    od: FakeOpendoctor
    http: HttpClient
    manager: VnfManager | None = None

    async def notify(self, state: str, session: str = "s-1", **traits: Any) -> dict[str, Any]:
        """Send one notice as opendoctor's alarm callback; its HTTP answer (status, body)."""
        resp = await self.http.post(
            self.url + "/maintenance", json=self.notice(state, session, **traits)
        )
        return {"status": resp.status, "body": resp.json()}

    def notice(self, state: str, session: str = "s-1", **traits: Any) -> dict[str, Any]:
        message_id = traits.pop("message_id", str(uuid.uuid4()))
        url = self.od.session_url(session)
        values = {
            "state": state,
            "session_id": session,
            "project_id": PROJECT,
            "instance_ids": url,
            "reply_url": url,
            "actions_at": "2030-01-01 12:00:00",
            "allowed_actions": ALL_ACTIONS,
            "metadata": json.dumps({"reason": "upgrade"}),
        } | traits
        return {
            "alarm_name": f"{PROJECT}-maintenance",
            "alarm_id": "alarm-1",
            "severity": "low",
            "previous": "alarm",
            "current": "alarm",
            "reason": "Event hits the alarm",
            "reason_data": {
                "type": "event",
                "event": {
                    "message_id": message_id,
                    "event_type": "maintenance.scheduled",
                    "generated": "2030-01-01T11:00:00",
                    "traits": [[k, 1, v] for k, v in values.items() if v is not None],
                },
            },
        }

    async def status(self) -> dict[str, Any]:
        resp = await self.http.get(self.url + "/status")
        assert resp.status == 200
        result: dict[str, Any] = resp.json()
        return result

    async def handled(self, count: int) -> dict[str, Any]:
        """The status once `count` notices have been dealt with."""

        async def done() -> dict[str, Any]:
            status = await self.status()
            finished = [n for n in status["notices"] if n["handled"] is not None]
            return status if len(finished) >= count else {}

        return await eventually(done, what=f"{count} notices handled")

    async def replies(self, count: int) -> list[dict[str, Any]]:
        return await eventually(
            lambda: self.od.replies if len(self.od.replies) >= count else [],
            what=f"{count} replies",
        )


StartVnfm = Callable[..., Awaitable[Vnfm]]


@pytest.fixture
async def od() -> AsyncIterator[FakeOpendoctor]:
    fake = FakeOpendoctor()
    runner, fake.url = await serve_app(fake.app())
    yield fake
    if fake.hold_lists is not None:
        fake.hold_lists.set()
    await runner.cleanup()


@pytest.fixture
async def start_vnfm(od: FakeOpendoctor) -> AsyncIterator[StartVnfm]:
    started: list[tuple[VnfManager, web.AppRunner]] = []
    http = HttpClient(timeout=10.0)

    async def start(
        lab: LabRunner | None = None, pairs: dict[str, str] | None = None, **options: Any
    ) -> Vnfm:
        config = VnfmConfig(od.url, PROJECT, quiet=True, **options)
        manager = VnfManager(config, lab.client if lab is not None else None, pairs)
        runner, url = await serve_app(vnfm.make_app(manager))
        started.append((manager, runner))
        await manager.start(url + "/maintenance")
        return Vnfm(url, od, http, manager)

    yield start
    for manager, runner in started:
        await runner.cleanup()
        await manager.close()
    await http.close()


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[LabRunner]:
    spec = LabSpec(hosts=2, vms=0, projects=[PROJECT, OTHER], ip_prefix="127.171")
    async with LabRunner(spec, tmp_path / "lab") as runner:
        yield runner


# -- subscribing ---------------------------------------------------------------------------


async def test_it_subscribes_to_its_maintenance_notices_and_unsubscribes_when_it_stops(
    od: FakeOpendoctor, start_vnfm: StartVnfm
) -> None:
    v = await start_vnfm()
    [(headers, alarm)] = od.alarms
    assert headers == IDENTITY
    assert alarm == {
        "name": f"{PROJECT}-maintenance",
        "type": "event",
        "event_rule": {"event_type": "maintenance.scheduled", "query": []},
        "alarm_actions": [v.url + "/maintenance"],
        "repeat_actions": True,
    }
    assert (await v.status())["alarm_id"] == "alarm-1"
    assert v.manager is not None
    await v.manager.close()
    assert od.deleted == ["alarm-1"]


async def test_with_constraints_it_registers_its_group_and_each_of_its_servers(
    od: FakeOpendoctor, start_vnfm: StartVnfm, lab: LabRunner
) -> None:
    active, standby, _ = await create_pair(lab.client)
    await lab.client.create_server("theirs", OTHER)
    await start_vnfm(lab, {active.id: standby.id}, constraints=True, recovery_time=5, lead_time=30)
    assert od.constraints.pop(f"instance_group/{PROJECT}-group") == {
        "group_id": f"{PROJECT}-group",
        "project_id": PROJECT,
        "group_name": f"{PROJECT}-group",
        "anti_affinity_group": True,
        "max_instances_per_host": 0,
        "max_impacted_members": 1,
        "recovery_time": 5,
        "resource_mitigation": False,
    }
    assert set(od.constraints) == {f"instance/{active.id}", f"instance/{standby.id}"}
    assert od.constraints[f"instance/{active.id}"] == {
        "instance_id": active.id,
        "project_id": PROJECT,
        "group_id": f"{PROJECT}-group",
        "instance_name": "server1",
        "migration_type": "MIGRATE",
        "max_interruption_time": 120,
        "lead_time": 30,
        "resource_mitigation": False,
    }


# -- answering each state ------------------------------------------------------------------


async def test_maintenance_is_answered_with_the_instances_the_session_lists(
    od: FakeOpendoctor, start_vnfm: StartVnfm
) -> None:
    od.instance_ids = ["vm-1", "vm-2"]
    v = await start_vnfm()
    assert await v.notify("MAINTENANCE") == {"status": 200, "body": {"ok": True}}
    [reply] = await v.replies(1)
    assert reply == {
        "session_id": "s-1",
        "state": "ACK_MAINTENANCE",
        "instance_ids": ["vm-1", "vm-2"],
    }
    # The list was asked for as Fenix's API has it: the session in the body, as the project.
    assert od.lists == [(IDENTITY, {"session_id": "s-1"})]
    assert od.reply_headers == [IDENTITY]
    status = await v.handled(1)
    [notice] = status["notices"]
    assert (notice["state"], notice["session_id"]) == ("MAINTENANCE", "s-1")
    assert notice["received"] <= notice["handled"]
    [sent] = status["replies"]
    assert (sent["state"], sent["status"]) == ("ACK_MAINTENANCE", 200)


async def test_the_callback_is_answered_before_the_work_is_done(
    od: FakeOpendoctor, start_vnfm: StartVnfm
) -> None:
    od.hold_lists = asyncio.Event()
    od.instance_ids = ["vm-1"]
    v = await start_vnfm()
    # Answered while the manager still waits for its instance list.
    assert (await v.notify("MAINTENANCE"))["status"] == 200
    await eventually(lambda: od.lists, what="the instance list asked for")
    assert od.replies == []
    od.hold_lists.set()
    [reply] = await v.replies(1)
    assert reply["state"] == "ACK_MAINTENANCE"


@pytest.mark.parametrize(
    ("preferred", "allowed", "action"),
    [
        ("MIGRATE", ALL_ACTIONS, "MIGRATE"),
        ("LIVE_MIGRATE", ALL_ACTIONS, "LIVE_MIGRATE"),
        # Python's repr, as some senders write lists: read with YAML, as Doctor's did.
        ("LIVE_MIGRATE", "['MIGRATE', 'OWN_ACTION']", "MIGRATE"),
        ("OWN_ACTION", '["LIVE_MIGRATE"]', "LIVE_MIGRATE"),
    ],
)
async def test_each_instance_is_given_its_preferred_action_if_allowed(
    od: FakeOpendoctor, start_vnfm: StartVnfm, preferred: str, allowed: str, action: str
) -> None:
    od.instance_ids = ["vm-1", "vm-2"]
    v = await start_vnfm(migration_type=preferred)
    await v.notify("PLANNED_MAINTENANCE", allowed_actions=allowed)
    [reply] = await v.replies(1)
    assert reply == {
        "session_id": "s-1",
        "state": "ACK_PLANNED_MAINTENANCE",
        "instance_actions": {"vm-1": action, "vm-2": action},
    }


async def test_instances_listed_in_the_notice_itself_are_taken_from_it(
    od: FakeOpendoctor, start_vnfm: StartVnfm
) -> None:
    v = await start_vnfm()
    await v.notify("PLANNED_MAINTENANCE", instance_ids="['vm-7']")  # as Fenix lists them
    [reply] = await v.replies(1)
    assert reply["instance_actions"] == {"vm-7": "MIGRATE"}
    assert od.lists == []


async def test_a_session_that_allows_no_migration_is_refused(
    od: FakeOpendoctor, start_vnfm: StartVnfm
) -> None:
    od.instance_ids = ["vm-1"]
    v = await start_vnfm()
    await v.notify("PREPARE_MAINTENANCE", allowed_actions='["OWN_ACTION"]')
    [reply] = await v.replies(1)
    assert reply == {"session_id": "s-1", "state": "NACK_PREPARE_MAINTENANCE"}
    assert "not allowed" in (await v.handled(1))["errors"][0]["error"]


async def test_instance_action_done_is_recorded_and_acknowledged_only_with_a_reply_url(
    od: FakeOpendoctor, start_vnfm: StartVnfm
) -> None:
    v = await start_vnfm()
    await v.notify("INSTANCE_ACTION_DONE", instance_id="vm-1")
    await v.notify("INSTANCE_ACTION_DONE", session="s-2", reply_url=None, instance_ids='["vm-2"]')
    status = await v.handled(2)
    assert [(d["instance_id"], d["session_id"]) for d in status["instance_action_done"]] == [
        ("vm-1", "s-1"),
        ("vm-2", "s-2"),
    ]
    assert all(d["at"] > 0 for d in status["instance_action_done"])
    assert od.replies == [{"session_id": "s-1", "state": "ACK_INSTANCE_ACTION_DONE"}]


async def test_a_refused_state_is_answered_nack_and_the_others_ack(
    od: FakeOpendoctor, start_vnfm: StartVnfm, lab: LabRunner
) -> None:
    od.instance_ids = ["vm-1"]
    extra = await lab.client.create_server("extra", PROJECT)
    v = await start_vnfm(lab, nack=frozenset({"SCALE_IN"}))
    await v.notify("MAINTENANCE")
    await v.notify("SCALE_IN")
    replies = await v.replies(2)
    assert replies[1] == {"session_id": "s-1", "state": "NACK_SCALE_IN"}
    assert replies[0]["state"] == "ACK_MAINTENANCE"
    # A refusal does nothing: the server it would have given up is still there.
    assert extra.id in {s.id for s in await lab.client.servers()}
    assert (await v.status())["scaled_in"] == []


async def test_a_silent_manager_answers_nothing(od: FakeOpendoctor, start_vnfm: StartVnfm) -> None:
    v = await start_vnfm(silent=True)
    for state in ("MAINTENANCE", "SCALE_IN", "PREPARE_MAINTENANCE", "MAINTENANCE_COMPLETE"):
        assert (await v.notify(state))["status"] == 200
    status = await v.handled(4)
    assert [n["state"] for n in status["notices"]] == [
        "MAINTENANCE",
        "SCALE_IN",
        "PREPARE_MAINTENANCE",
        "MAINTENANCE_COMPLETE",
    ]
    assert (od.replies, od.lists, status["replies"]) == ([], [], [])


async def test_a_redelivered_notice_is_handled_once(
    od: FakeOpendoctor, start_vnfm: StartVnfm
) -> None:
    v = await start_vnfm()
    first = await v.notify("MAINTENANCE", message_id="m-1")
    again = await v.notify("MAINTENANCE", message_id="m-1")
    await v.notify("MAINTENANCE_COMPLETE", message_id="m-2")
    assert (first["body"], again["body"]) == ({"ok": True}, {"duplicate": True})
    status = await v.handled(2)
    assert status["repeats"] == ["m-1"]
    assert [r["state"] for r in await v.replies(2)] == [
        "ACK_MAINTENANCE",
        "ACK_MAINTENANCE_COMPLETE",
    ]


# -- acting on the lab ---------------------------------------------------------------------


async def test_scale_in_gives_up_its_newest_extra_server_and_completion_brings_it_back(
    od: FakeOpendoctor, start_vnfm: StartVnfm, lab: LabRunner
) -> None:
    client = lab.client
    active, standby, _ = await create_pair(client)
    older = await client.create_server("extra1", PROJECT)
    newest = await client.create_server("extra2", PROJECT, vcpus=2)
    theirs = await client.create_server("theirs", OTHER)  # newer still, not its own
    od.instance_ids = [active.id, newest.id]
    v = await start_vnfm(lab, {active.id: standby.id})

    await v.notify("SCALE_IN")
    [reply] = await v.replies(1)
    assert reply == {"session_id": "s-1", "state": "ACK_SCALE_IN", "instance_ids": [active.id]}
    left = {s.id for s in await client.servers()}
    assert left == {active.id, standby.id, older.id, theirs.id}

    await v.notify("MAINTENANCE_COMPLETE")
    replies = await v.replies(2)
    assert replies[1] == {"session_id": "s-1", "state": "ACK_MAINTENANCE_COMPLETE"}
    [again] = [s for s in await client.servers() if s.id not in left]
    assert (again.name, again.project_id, again.vcpus) == ("extra2", PROJECT, 2)
    status = await v.status()
    assert [(s["id"], s["name"]) for s in status["scaled_in"]] == [(newest.id, "extra2")]
    assert [(s["id"], s["replaces"]) for s in status["scaled_out"]] == [(again.id, newest.id)]


async def _lb_and_vip(lab: LabRunner, vip: str, http: HttpClient) -> dict[str, Any]:
    members = {m["server_id"]: m["admin_state_up"] for m in await lab.client.lb_members()}
    served = await http.get(vip)
    return {"members": members, "vip": (served.status, served.body.decode().strip())}


async def test_a_pair_is_switched_over_before_its_active_is_given_up_to_maintenance(
    od: FakeOpendoctor, start_vnfm: StartVnfm, lab: LabRunner
) -> None:
    client = lab.client
    active, standby, pool = await create_pair(client)
    vip = f"http://{pool['vip_address']}:{pool['vip_port']}/"
    http = HttpClient(timeout=5.0)
    od.on_reply = lambda _: _lb_and_vip(lab, vip, http)
    v = await start_vnfm(lab, {active.id: standby.id})
    try:
        od.instance_ids = [active.id]  # server1's host is emptied first
        await v.notify("PREPARE_MAINTENANCE")
        [reply] = await v.replies(1)
        assert reply == {
            "session_id": "s-1",
            "state": "ACK_PREPARE_MAINTENANCE",
            "instance_actions": {active.id: "MIGRATE"},
        }
        # When the answer came, clients of the VIP were already served by the standby.
        assert od.seen_at_reply[0] == {
            "members": {active.id: False, standby.id: True},
            "vip": (200, "Served by server2"),
        }
        roles = {s["id"]: s["role"] for s in await client.server_details()}
        assert roles == {active.id: "standby", standby.id: "active"}

        od.instance_ids = [standby.id]  # then server2's host: the pair switches back
        await v.notify("PLANNED_MAINTENANCE")
        replies = await v.replies(2)
        assert replies[1]["instance_actions"] == {standby.id: "MIGRATE"}
        assert od.seen_at_reply[1] == {
            "members": {active.id: True, standby.id: False},
            "vip": (200, "Served by server1"),
        }
    finally:
        await http.close()
    status = await v.status()
    assert [(s["failed"], s["reason"], s["error"]) for s in status["switchovers"]] == [
        (active.id, "maintenance", None),
        (standby.id, "maintenance", None),
    ]
    assert all(s["done"] is not None for s in status["switchovers"])
    assert status["pairs"] == {active.id: standby.id}


@pytest.mark.parametrize("listed", ["active first", "standby first"])
async def test_a_standby_on_the_host_too_is_moved_first_and_the_pair_switched_to_it(
    od: FakeOpendoctor, start_vnfm: StartVnfm, lab: LabRunner, listed: str
) -> None:
    active, standby, pool = await create_pair(lab.client)
    # Both on compute1, the host being emptied (disabled, as the session has it).
    await lab.client.migrate(standby.id, "compute1")
    await lab.client.set_enabled("compute1", False)
    ids = [active.id, standby.id]
    od.instance_ids = ids if listed == "active first" else ids[::-1]
    v = await start_vnfm(lab, {active.id: standby.id})
    await v.notify("PLANNED_MAINTENANCE")
    [reply] = await v.replies(1)
    assert reply["instance_actions"] == {active.id: "MIGRATE", standby.id: "OWN_ACTION"}
    status = await v.status()
    [moved] = status["own_moves"]
    assert (moved["instance_id"], moved["from"], moved["to"]) == (
        standby.id,
        "compute1",
        "compute2",
    )
    [switch] = status["switchovers"]
    assert (switch["failed"], switch["standby"], switch["error"]) == (active.id, standby.id, None)
    members = {m["server_id"]: m["admin_state_up"] for m in await lab.client.lb_members()}
    assert members == {active.id: False, standby.id: True}
    http = HttpClient(timeout=5.0)
    try:
        served = await http.get(f"http://{pool['vip_address']}:{pool['vip_port']}/")
    finally:
        await http.close()
    assert served.body.decode().strip() == "Served by server2"


async def test_a_pair_whose_standby_moves_too_is_not_switched_without_own_action(
    od: FakeOpendoctor, start_vnfm: StartVnfm, lab: LabRunner
) -> None:
    active, standby, _ = await create_pair(lab.client)
    od.instance_ids = [active.id, standby.id]
    v = await start_vnfm(lab, {active.id: standby.id})
    await v.notify("PLANNED_MAINTENANCE", allowed_actions=json.dumps(["MIGRATE", "LIVE_MIGRATE"]))
    [reply] = await v.replies(1)
    assert reply["instance_actions"] == {active.id: "MIGRATE", standby.id: "MIGRATE"}
    status = await v.status()
    assert status["switchovers"] == [] and status["own_moves"] == []
    assert "standby is to move too" in status["errors"][0]["error"]
    members = {m["server_id"]: m["admin_state_up"] for m in await lab.client.lb_members()}
    assert members == {active.id: True, standby.id: False}


async def test_a_standby_that_cannot_serve_is_not_switched_to(
    od: FakeOpendoctor, start_vnfm: StartVnfm, lab: LabRunner
) -> None:
    active, standby, _ = await create_pair(lab.client)
    await lab.client.stop(standby.id)
    od.instance_ids = [active.id]
    v = await start_vnfm(lab, {active.id: standby.id})
    await v.notify("PREPARE_MAINTENANCE")
    [reply] = await v.replies(1)
    assert reply["instance_actions"] == {active.id: "MIGRATE"}
    [switchover] = (await v.status())["switchovers"]
    assert switchover["done"] is None
    assert switchover["error"].startswith(f"no healthy standby: {standby.id}")
    members = {m["server_id"]: m["admin_state_up"] for m in await lab.client.lb_members()}
    assert members == {active.id: True, standby.id: False}


# -- bad input -----------------------------------------------------------------------------


def _with_traits(traits: Any) -> dict[str, Any]:
    return {"reason_data": {"event": {"event_type": "maintenance.scheduled", "traits": traits}}}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"{}", "no reason_data.event"),
        (json.dumps(_with_traits("state")).encode(), "traits is not a list"),
        (json.dumps(_with_traits([["state", 1]])).encode(), "not [name, type, value]"),
        (json.dumps(_with_traits([[1, 1, "x"]])).encode(), "not [name, type, value]"),
        (json.dumps(_with_traits([["state", 1, "REBOOT"]])).encode(), "is not one of"),
        (json.dumps(_with_traits([["state", 1, "MAINTENANCE"]])).encode(), "no session_id"),
        (
            json.dumps(
                {"reason_data": {"event": {"event_type": "compute.instance.update"}}}
            ).encode(),
            "is not maintenance.scheduled",
        ),
    ],
)
async def test_a_malformed_callback_is_refused_and_the_manager_goes_on(
    od: FakeOpendoctor, start_vnfm: StartVnfm, body: bytes, problem: str
) -> None:
    v = await start_vnfm()
    resp = await v.http.post(
        v.url + "/maintenance", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status == 400
    assert problem in resp.json()["error"]
    await v.notify("MAINTENANCE")
    [reply] = await v.replies(1)
    assert reply["state"] == "ACK_MAINTENANCE"
    assert [n["state"] for n in (await v.status())["notices"]] == ["MAINTENANCE"]


async def test_a_callback_body_over_64_kib_is_refused(
    od: FakeOpendoctor, start_vnfm: StartVnfm
) -> None:
    v = await start_vnfm()
    body = v.notice("MAINTENANCE", metadata=json.dumps({"pad": "x" * 65536}))
    resp = await v.http.post(v.url + "/maintenance", json=body)
    assert resp.status == 413
    assert "at most 65536 bytes" in resp.json()["error"]
    assert (await v.status())["notices"] == []


# -- the command ---------------------------------------------------------------------------


async def test_the_served_manager_announces_itself_answers_and_unsubscribes_on_stop(
    od: FakeOpendoctor, tmp_path: Path
) -> None:
    ready = tmp_path / "vnfm.ready"
    config = vnfm.make_config(od.url, PROJECT, nack=["SCALE_IN"], quiet=True)
    task = asyncio.create_task(vnfm.serve("127.0.0.1", 0, ready, config))
    http = HttpClient(timeout=5.0)
    try:
        url = await eventually(
            lambda: ready.read_text() if ready.exists() else "", what="ready file"
        )
        assert od.alarms[0][1]["alarm_actions"] == [f"{url}/maintenance"]
        v = Vnfm(url, od, http)
        await v.notify("SCALE_IN")
        [reply] = await v.replies(1)
        assert reply["state"] == "NACK_SCALE_IN"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await http.close()
    assert od.deleted == ["alarm-1"]


def test_the_command_refuses_an_unknown_action_or_state() -> None:
    runner = CliRunner()
    assert runner.invoke(cli_app, ["vnfm", "--help"]).exit_code == 0
    args = ["vnfm", "--api", "http://127.0.0.1:1", "--project", PROJECT]
    bad_action = runner.invoke(cli_app, [*args, "--migration-type", "TELEPORT"])
    assert bad_action.exit_code != 0
    assert "--migration-type takes one of MIGRATE" in bad_action.output
    bad_state = runner.invoke(cli_app, [*args, "--nack", "REBOOT"])
    assert bad_state.exit_code != 0
    assert "--nack takes one of MAINTENANCE" in bad_state.output
    # Pairs are switched through the lab: without one they cannot be.
    no_lab = runner.invoke(cli_app, [*args, "--pair", "a=b"])
    assert no_lab.exit_code != 0
    assert "--pair needs --lab-url" in no_lab.output
