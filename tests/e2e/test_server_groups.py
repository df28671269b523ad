"""Server-group messaging end to end: applications on lab VMs' agent sockets, the lab
hosts' host links, the service routing between them (docs/server-groups.md).

A broadcast reaches the group's members on two hosts; a member killed is `failed` to its
peers, one migrated is `migrated` with its new host; a failed host's VMs are
`unreachable` until it is fenced and `failed` only after; the status query answers; a
send to a group the sender is not in is refused with `not-member`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.bench_groups import (
    PROJECT,
    Receiver,
    all_found,
    make_group,
    open_receivers,
    until_routed,
)
from opendoctor.tools.stack import Stack, running_stack
from tests.conftest import eventually

SPEC = LabSpec(hosts=3, vms=0, projects=[PROJECT], ip_prefix="127.86")


@dataclass
class Group:
    id: str
    members: list[str]  # member i runs on compute(i % hosts + 1)
    apps: list[Receiver]


@asynccontextmanager
async def group(s: Stack, name: str, members: int, hosts: int = 2) -> AsyncIterator[Group]:
    gid, ids = await make_group(s, name, members, hosts)
    apps = await open_receivers(s, ids)
    try:
        await until_routed(apps[0], apps[1:], gid)
        yield Group(gid, ids, apps)
    finally:
        for app in apps:
            await app.close()


def kind(**fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda line: all(line.get(k) == v for k, v in fields.items())


def lines(app: Receiver, **fields: Any) -> list[dict[str, Any]]:
    return [line for _, _, line in app.got if kind(**fields)(line)]


async def test_broadcast_status_and_refusal(tmp_path: Path) -> None:
    async with (
        running_stack(SPEC, tmp_path) as s,
        group(s, "web", 4) as web,  # compute1, compute2, compute1, compute2
        group(s, "db", 2) as db,
    ):
        sender = web.apps[0]
        text = f"hello peers {uuid.uuid4().hex}"
        sender.send(text, web.id, "m1")
        await all_found(web.apps[1:], kind(type="message", payload=text), 10)
        for app in web.apps[1:]:
            (got,) = lines(app, type="message", payload=text)
            assert (got["from"], got["group"]) == (web.members[0], web.id)
        # Not to the sender itself, nor to another group.
        assert lines(sender, type="message", payload=text) == []
        assert all(lines(app, type="message", payload=text) == [] for app in db.apps)

        # The status query: every peer, where it runs, in what state.
        sender.write({"type": "status", "request_id": "q1", "group": web.id})
        await all_found([sender], kind(type="status-response", request_id="q1"), 10)
        (answer,) = lines(sender, type="status-response", request_id="q1")
        peers = {p["id"]: p for p in answer["peers"]}
        assert set(peers) == set(web.members[1:])
        assert peers[web.members[1]]["host"] == "compute2"
        assert peers[web.members[2]]["host"] == "compute1"
        assert {p["state"] for p in peers.values()} == {"started"}
        assert {p["group"] for p in peers.values()} == {web.id}

        # A group the sender is not in: refused, and nobody in it hears.
        refused = uuid.uuid4().hex
        sender.send(refused, db.id, refused)
        await all_found([sender], kind(type="error", ref=refused), 10)
        (error,) = lines(sender, type="error", ref=refused)
        assert error["code"] == "not-member"
        assert all(lines(app, payload=refused) == [] for app in db.apps)
        status = await s.get("/v1/hostlink")
        assert status["routing"]["refused.not_member"] >= 1


async def test_peer_states_on_a_vm_failure_and_a_migration(tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s, group(s, "pair", 3) as pair:
        victim, moved = pair.members[1], pair.members[2]
        watcher = pair.apps[0]

        await s.lab.client.kill_server(victim)
        await all_found(
            [pair.apps[0], pair.apps[2]], kind(type="peer-state", peer=victim, state="failed"), 30
        )
        (failed,) = lines(watcher, type="peer-state", peer=victim, state="failed")
        assert failed["group"] == pair.id and failed["host"] == "compute2"

        await s.lab.client.migrate(moved, "compute3")
        await all_found([watcher], kind(type="peer-state", peer=moved, state="migrated"), 30)
        (migrated,) = lines(watcher, type="peer-state", peer=moved, state="migrated")
        assert migrated["host"] == "compute3"


async def test_a_failed_hosts_vms_are_unreachable_until_it_is_fenced(tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s, group(s, "ha", 2) as ha:
        peer, watcher = ha.members[1], ha.apps[0]  # peer on compute2
        await s.lab.client.fail_host("compute2")
        await all_found([watcher], kind(type="peer-state", peer=peer, state="failed"), 60)
        heard = {
            line["state"]: wall
            for _, wall, line in watcher.got
            if line.get("type") == "peer-state" and line.get("peer") == peer
        }

        async def fenced() -> float | None:
            faults = [f for f in await s.get("/v1/faults") if f["hostname"] == "compute2"]
            return next((f["trace"]["T05"] for f in faults if "T05" in f["trace"]), None)

        t05 = await eventually(fenced, 60, "the fault's fence confirmed (T05)")
        # Never failed before the fence: unreachable while it is not heard, failed only
        # once it is confirmed off.
        assert heard["unreachable"] < t05 <= heard["failed"]
