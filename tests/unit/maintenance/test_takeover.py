"""Scaled out: a session runs in one process at a time (its lease), and another takes
it over when the process that ran it dies."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from opendoctor.core.maintenance import MAINTENANCE_DONE
from opendoctor.maintenance.engine import Engine
from opendoctor.maintenance.service import Maintenance
from opendoctor.store.db import Database
from opendoctor.store.leases import LeaseStore
from opendoctor.store.maintenance import MaintenanceStore
from tests.conftest import eventually
from tests.unit.maintenance.bed import Cloud, Gate, settings


class Killed(LeaseStore):
    """The leases of a process that is killed: it never gives them back."""

    async def release(self, name: str, holder: str) -> None:
        return None

    async def release_many(self, names: Collection[str], holder: str) -> None:
        return None


async def test_a_dead_processs_session_is_taken_over_and_finished(db: Database) -> None:
    cloud = Cloud.make(2, {})
    gate = Gate()
    config = settings(default_host_action="gate")
    store = MaintenanceStore(db)
    maintainers = {"gate": gate}
    first = Engine(cloud.reach(store, config, maintainers), Killed(db), "first", lease_ttl=1.0)
    second = Engine(cloud.reach(store, config, maintainers), LeaseStore(db), "second", 1.0)
    service = Maintenance(
        store, config, lambda: cloud.topology.hosts, lambda: cloud.topology.servers, first
    )
    await first.start()
    session = await service.create(["compute1"], None)
    await eventually(lambda: gate.entered, 10, "the first process to maintain compute1")
    await second.start()
    try:
        # While the first holds the lease, the second does not run the session too.
        # Nothing to wait for but time: more than a take-over round of the second (ttl / 2).
        await asyncio.sleep(0.6)
        assert second.running() == [] and gate.entered == ["compute1"]
        await first.stop()  # killed: its lease is left to expire
        await eventually(lambda: len(gate.entered) == 2, 10, "the second process to take over")
        gate.open.set()

        async def done() -> bool:
            stored = await store.get(session.session_id)
            return stored is not None and stored.state == MAINTENANCE_DONE

        await eventually(done, 10, "the session to end")
    finally:
        await second.stop()
        await cloud.close()
