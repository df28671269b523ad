"""Maintenance sessions on the memory VIM: owners asked, hosts emptied as agreed,
maintained and returned one by one; refusals, cancels, restarts, groups and faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from opendoctor.core.maintenance import (
    HOST_RETURNED,
    INSTANCE_DONE,
    LIVE_MIGRATE,
    MAINTENANCE_CANCELLED,
    MAINTENANCE_DONE,
    MAINTENANCE_FAILED,
    MIGRATE,
    OWN_ACTION,
    InstanceConstraints,
    InstanceGroupConstraints,
    Session,
)
from opendoctor.core.model import Server
from opendoctor.store.db import Database
from tests.conftest import eventually
from tests.unit.maintenance.bed import Cloud, Gate, Running, decoded, settings, start


def moves(result: str) -> float:
    total = 0.0
    for action in ("MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"):
        labels = {"action": action, "result": result}
        total += REGISTRY.get_sample_value("opendoctor_maintenance_moves_total", labels) or 0.0
    return total


class Owner:
    """A project's application manager that answers every notice at once."""

    def __init__(self, running: Running, project: str, action: str = LIVE_MIGRATE) -> None:
        self.running = running
        self.project = project
        self.action = action
        self.nack: str | None = None
        self.handled = 0
        self.task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        notices = self.running.cloud.notices
        while True:
            await notices.arrived.wait()
            notices.arrived.clear()
            mine = notices.of(self.project)
            fresh, self.handled = mine[self.handled :], len(mine)
            for notice in fresh:
                if notice["state"] != "INSTANCE_ACTION_DONE":
                    await self._answer(notice)

    async def _answer(self, notice: dict[str, Any]) -> None:
        state = notice["state"]
        service = self.running.service
        session_id = notice["session_id"]
        ids = await service.project_instances(session_id, self.project)
        verdict = "NACK" if state == self.nack else "ACK"
        actions = None
        if state in ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE") and verdict == "ACK":
            actions = dict.fromkeys(ids, self.action)
        await service.project_reply(
            session_id, self.project, f"{verdict}_{state}", instance_ids=ids,
            instance_actions=actions,
        )  # fmt: skip

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def cloud() -> AsyncIterator[Cloud]:
    # compute1: two owners' servers; compute2: one; compute3: empty.
    made = Cloud.make(3, {"compute1": ["p1", "p2"], "compute2": ["p1"]})
    yield made
    await made.close()


async def ended(running: Running, session_id: str, timeout: float = 20) -> Session:
    async def done() -> Session | None:
        session = await running.service.get(session_id)
        return session if session.done else None

    return await eventually(done, timeout, "the session to end")


class Watch:
    """A host action that notes what ran on the host while it was maintained."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.seen: dict[str, list[str]] = {}

    async def maintain(self, host: str, metadata: dict[str, Any]) -> None:
        self.seen[host] = [s.id for s in self.cloud.topology.servers_on(host)]


async def test_a_rolling_session_asks_moves_maintains_and_returns_every_host(
    cloud: Cloud, db: Database
) -> None:
    watch = Watch(cloud)
    before = moves("done")
    # p2 never answers: its instances move the default way once its time is over.
    config = settings(reply_timeout=0.5, default_host_action="watch")
    running = await start(cloud, db, config, {"watch": watch})
    owner = Owner(running, "p1")
    try:
        session = await running.service.create([], None)
        done = await ended(running, session.session_id)
    finally:
        await owner.close()
        await running.engine.stop()
    assert done.state == MAINTENANCE_DONE, done.error
    assert set(done.hosts) == {"compute1", "compute2", "compute3"}
    assert all(h.state == HOST_RETURNED for h in done.host_progress.values())
    # Every host was empty while maintained, and is back in service.
    assert watch.seen == {"compute1": [], "compute2": [], "compute3": []}
    assert all(h.enabled for h in cloud.vim.hosts.values())
    assert [m for m in cloud.marks if m[0] == "compute1"] == [
        ("compute1", True),
        ("compute1", False),
    ]
    # p1 moved as it asked; p2's instance the default way, and p2 is marked as defaulted.
    moved = done.instances
    assert {i.instance_id: i.action for i in moved.values()} == {
        "compute1-vm0": LIVE_MIGRATE, "compute1-vm1": MIGRATE, "compute2-vm0": LIVE_MIGRATE,
    }  # fmt: skip
    assert all(i.state == INSTANCE_DONE and i.to_host != i.host for i in moved.values())
    assert moves("done") - before == 3  # as /metrics counts them
    assert done.projects["p2"].defaults == ["MAINTENANCE", "PLANNED_MAINTENANCE"]
    assert done.projects["p1"].defaults == []
    # The owners heard each step in DESIGN §5's order, and of each instance once moved.
    p1 = [n["state"] for n in cloud.notices.of("p1")]
    assert p1[0] == "MAINTENANCE" and p1[-1] == "MAINTENANCE_COMPLETE"
    assert p1.count("INSTANCE_ACTION_DONE") == 2
    done_notices = cloud.notices.of("p1", "INSTANCE_ACTION_DONE")
    assert {n["instance_id"] for n in done_notices} == {"compute1-vm0", "compute2-vm0"}
    assert all("reply_url" not in n for n in done_notices)  # nothing to answer
    first = cloud.notices.of("p1", "MAINTENANCE")[0]
    assert first["reply_url"].endswith(f"/v1/maintenance/{done.session_id}/p1")
    assert decoded(first["allowed_actions"]) == ["MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"]
    hosts = [(n["host"], n["state"]) for n in cloud.notices.of() if "host" in n]
    assert ("compute1", "IN_MAINTENANCE") in hosts and ("compute1", "MAINTENANCE_COMPLETE") in hosts


async def test_an_owner_that_refuses_ends_the_session_with_nothing_moved(
    cloud: Cloud, db: Database
) -> None:
    running = await start(cloud, db, settings())
    owner = Owner(running, "p1")
    owner.nack = "MAINTENANCE"
    try:
        session = await running.service.create(["compute1", "compute2"], None)
        done = await ended(running, session.session_id)
    finally:
        await owner.close()
        await running.engine.stop()
    assert done.state == MAINTENANCE_FAILED
    assert done.error is not None and "p1" in done.error
    assert {s.host for s in cloud.vim.servers.values()} == {"compute1", "compute2"}
    assert all(h.enabled for h in cloud.vim.hosts.values())


async def test_a_cancel_puts_the_hosts_back_and_stops_after_the_host_in_hand(
    cloud: Cloud, db: Database
) -> None:
    gate = Gate()
    running = await start(cloud, db, settings(default_host_action="gate"), {"gate": gate})
    owners = [Owner(running, "p1"), Owner(running, "p2")]
    try:
        session = await running.service.create([], None)
        await eventually(lambda: gate.entered, 10, "the first host to be in maintenance")
        await running.service.cancel(session.session_id)
        gate.open.set()
        done = await ended(running, session.session_id)
    finally:
        for owner in owners:
            await owner.close()
        await running.engine.stop()
    assert done.state == MAINTENANCE_CANCELLED
    assert gate.entered == ["compute3"]  # the emptiest first; none after the cancel
    assert all(h.enabled for h in cloud.vim.hosts.values())
    assert cloud.notices.of("p1", "MAINTENANCE_COMPLETE"), "owners hear it is over"


async def test_a_session_resumes_after_a_restart_without_asking_again(
    cloud: Cloud, db: Database
) -> None:
    gate = Gate()
    maintainers = {"gate": gate}
    config = settings(default_host_action="gate")
    running = await start(cloud, db, config, maintainers)
    owners = [Owner(running, "p1"), Owner(running, "p2")]
    session = await running.service.create(["compute1", "compute3"], None)
    # Stopped while compute3 (empty) is being maintained: the process goes away.
    await eventually(lambda: gate.entered, 10, "a host in maintenance")
    await running.engine.stop()
    for owner in owners:
        await owner.close()
    again = await start(cloud, db, config, maintainers)
    owners = [Owner(again, "p1"), Owner(again, "p2")]
    gate.open.set()
    try:
        done = await ended(again, session.session_id)
    finally:
        for owner in owners:
            await owner.close()
        await again.engine.stop()
    assert done.state == MAINTENANCE_DONE, done.error
    # compute3's maintenance was taken up again; compute1 then done once.
    assert gate.entered == ["compute3", "compute3", "compute1"]
    assert len(cloud.notices.of("p1", "MAINTENANCE")) == 1


class Slow:
    """Moves that take a while, counting how many of a group run at once."""

    def __init__(self, cloud: Cloud, group: set[str]) -> None:
        self.cloud = cloud
        self.group = group
        self.now = 0
        self.most = 0
        self.calls = 0
        self._migrate = cloud.vim.migrate
        cloud.vim.migrate = self.migrate  # type: ignore[method-assign]

    async def migrate(self, server_id: str, target_host: str | None = None) -> Server:
        self.calls += 1
        inside = server_id in self.group
        self.now += inside
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.05)  # the move's own duration, as a VIM's takes time
            return await self._migrate(server_id, target_host)
        finally:
            self.now -= inside


async def test_never_more_of_a_group_moves_at_once_than_it_allows(db: Database) -> None:
    cloud = Cloud.make(3, {"compute1": ["p1"] * 4})
    members = {f"compute1-vm{n}" for n in range(3)}
    slow = Slow(cloud, members)
    running = await start(cloud, db, settings(reply_timeout=0.2))
    try:
        await running.service.put_group(
            InstanceGroupConstraints("g1", "p1", max_impacted_members=1)
        )
        for member in members:
            await running.service.put_instance(
                InstanceConstraints(member, "p1", group_id="g1", migration_type=MIGRATE)
            )
        session = await running.service.create(["compute1"], None)
        done = await ended(running, session.session_id)
    finally:
        await running.engine.stop()
        await cloud.close()
    assert done.state == MAINTENANCE_DONE, done.error
    assert slow.calls == 4 and slow.most == 1
    assert {s.host for s in cloud.vim.servers.values()} <= {"compute2", "compute3"}


async def test_a_fault_on_another_host_holds_the_session_until_it_clears(
    cloud: Cloud, db: Database
) -> None:
    cloud.faulted.add("compute2")
    running = await start(cloud, db, settings(reply_timeout=0.2))
    try:
        session = await running.service.create(["compute3"], None)

        async def held() -> Session | None:
            s = await running.service.get(session.session_id)
            return s if s.waiting == "fault on compute2" else None

        waiting = await eventually(held, 10, "the session to hold")
        assert waiting.host_progress["compute3"].state == "waiting"
        cloud.faulted.clear()
        done = await ended(running, session.session_id)
    finally:
        await running.engine.stop()
    assert done.state == MAINTENANCE_DONE, done.error


async def test_an_owner_that_moves_its_instance_itself_is_waited_for(db: Database) -> None:
    cloud = Cloud.make(2, {"compute1": ["p1"]})
    running = await start(cloud, db, settings(reply_timeout=5))
    owner = Owner(running, "p1", action=OWN_ACTION)

    async def own_move() -> None:
        await eventually(lambda: cloud.notices.of("p1", "PREPARE_MAINTENANCE"), 10, "asked")
        # Its own way (say, a new instance elsewhere): here, a migration it asks for.
        await cloud.vim.migrate("compute1-vm0", "compute2")

    mover = asyncio.create_task(own_move())
    try:
        session = await running.service.create(["compute1"], None)
        await mover
        done = await ended(running, session.session_id)
    finally:
        await owner.close()
        await running.engine.stop()
        await cloud.close()
    assert done.state == MAINTENANCE_DONE, done.error
    item = done.instances["compute1-vm0"]
    assert (item.action, item.state, item.to_host) == (OWN_ACTION, INSTANCE_DONE, "compute2")
    # opendoctor moved nothing itself.
    assert [c for c in cloud.vim.calls if c[0] in ("migrate", "live_migrate")] == [
        ("migrate", "compute1-vm0")
    ]


async def test_each_instance_moves_once_to_a_host_already_maintained(db: Database) -> None:
    cloud = Cloud.make(3, {"compute1": ["p1"], "compute2": ["p1"]})
    running = await start(cloud, db, settings(reply_timeout=0.2))
    try:
        session = await running.service.create([], None)
        done = await ended(running, session.session_id)
    finally:
        await running.engine.stop()
        await cloud.close()
    assert done.state == MAINTENANCE_DONE, done.error
    # compute3, empty, went first; each server then moved once, onto a maintained host.
    moves = [c for c in cloud.vim.calls if c[0] == "migrate"]
    assert sorted(moves) == [("migrate", "compute1-vm0"), ("migrate", "compute2-vm0")]
    assert done.instances["compute1-vm0"].to_host == "compute3"


async def test_an_instance_moved_twice_keeps_its_first_move_on_record(db: Database) -> None:
    # Two hosts, both in use: what leaves compute1 can only go to compute2, and must
    # leave it again when compute2's turn comes.
    cloud = Cloud.make(2, {"compute1": ["p1"], "compute2": ["p1"]})
    running = await start(cloud, db, settings(reply_timeout=0.2))
    try:
        session = await running.service.create([], None)
        done = await ended(running, session.session_id)
    finally:
        await running.engine.stop()
        await cloud.close()
    assert done.state == MAINTENANCE_DONE, done.error
    twice = done.instances["compute1-vm0"]
    assert (twice.host, twice.to_host) == ("compute2", "compute1")
    assert [(m["host"], m["to_host"]) for m in twice.earlier] == [("compute1", "compute2")]
    assert done.instances["compute2-vm0"].earlier == []
