"""Sessions and room: owners asked to scale in when the other hosts could not take a
host's instances, and several hosts out at once where the constraints allow."""

from __future__ import annotations

import asyncio
from typing import Any

from opendoctor.core.maintenance import MAINTENANCE_DONE, MAINTENANCE_FAILED, SCALE_IN, Session
from opendoctor.store.db import Database
from tests.conftest import eventually
from tests.unit.maintenance.bed import Cloud, Running, settings, start


async def ended(running: Running, session_id: str) -> Session:
    async def done() -> Session | None:
        session = await running.service.get(session_id)
        return session if session.done else None

    return await eventually(done, 20, "the session to end")


async def test_owners_scale_in_when_the_other_hosts_have_no_room(db: Database) -> None:
    # Each host holds 2 vCPUs: compute1's two servers cannot go to compute2 (one free).
    cloud = Cloud.make(2, {"compute1": ["p1", "p1"], "compute2": ["p1"]}, vcpus=2)
    running = await start(cloud, db, settings(reply_timeout=5))

    async def answer(state: str) -> str:
        await eventually(lambda: cloud.notices.of("p1", state), 10, f"the {state} notice")
        return str(cloud.notices.of("p1", state)[0]["session_id"])

    async def scale_in() -> None:
        session_id = await answer("MAINTENANCE")
        await running.service.project_reply(session_id, "p1", "ACK_MAINTENANCE")
        await answer(SCALE_IN)
        cloud.vim.delete_server("compute1-vm1")
        await eventually(lambda: "compute1-vm1" not in cloud.topology.servers, 5, "the feed")
        # As Doctor's sample application manager names it.
        await running.service.project_reply(session_id, "p1", "ACK_DOWN_SCALE")
        await answer("PREPARE_MAINTENANCE")
        await running.service.project_reply(session_id, "p1", "ACK_PREPARE_MAINTENANCE")

    owner = asyncio.create_task(scale_in())
    try:
        session = await running.service.create(["compute1"], None)
        await owner
        done = await ended(running, session.session_id)
    finally:
        await running.engine.stop()
        await cloud.close()
    assert done.state == MAINTENANCE_DONE, done.error
    assert {s.host for s in cloud.vim.servers.values()} == {"compute2"}


async def test_without_room_even_after_asking_the_session_fails_and_moves_nothing(
    db: Database,
) -> None:
    cloud = Cloud.make(2, {"compute1": ["p1", "p1"], "compute2": ["p1"]}, vcpus=2)
    running = await start(cloud, db, settings(reply_timeout=0.3))
    try:
        session = await running.service.create(["compute1"], None)
        done = await ended(running, session.session_id)
    finally:
        await running.engine.stop()
        await cloud.close()
    assert done.state == MAINTENANCE_FAILED
    assert done.error is not None and "no room to empty compute1" in done.error
    assert done.projects["p1"].defaults == ["MAINTENANCE", SCALE_IN]
    assert [s.host for s in cloud.vim.servers.values()].count("compute1") == 2
    assert all(h.enabled for h in cloud.vim.hosts.values())


class Together:
    """A host action that notes how many hosts are maintained at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.pair = asyncio.Event()

    async def maintain(self, host: str, metadata: dict[str, Any]) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        if self.inside == 2:
            self.pair.set()
        try:
            # Held until a second host joins (or a while passes): a batch of two overlaps.
            await asyncio.wait_for(self.pair.wait(), 2.0)
        except TimeoutError:
            pass
        finally:
            self.inside -= 1
            if self.inside == 0:
                self.pair.clear()


async def test_hosts_go_out_together_up_to_the_sessions_limit(db: Database) -> None:
    cloud = Cloud.make(4, {"compute1": ["p1"], "compute2": ["p1"]})
    together = Together()
    config = settings(reply_timeout=0.2, default_host_action="together")
    running = await start(cloud, db, config, {"together": together})
    try:
        session = await running.service.create([], None, metadata={"max_parallel_hosts": 2})
        done = await ended(running, session.session_id)
    finally:
        await running.engine.stop()
        await cloud.close()
    assert done.state == MAINTENANCE_DONE, done.error
    assert together.most == 2
    # The empty pair went first, together; then the two that had to be emptied.
    returned = sorted(done.host_progress.values(), key=lambda h: h.finished or 0)
    assert {h.name for h in returned[:2]} == {"compute3", "compute4"}
