"""Maintenance inside the whole service (memory VIM): a host a session holds in
maintenance that goes down raises no fault and tells nobody, and the graph shows it in
maintenance; once returned, the same report is a fault again."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opendoctor.app.service import Service
from opendoctor.core.maintenance import (
    HOST_IN_MAINTENANCE,
    START_MAINTENANCE,
    HostProgress,
    Session,
)
from opendoctor.core.model import Event
from opendoctor.inspector.graph.model import make_key
from opendoctor.store.db import Database
from opendoctor.store.maintenance import MaintenanceStore
from tests.integration.pipeline.conftest import lab_vim, settings_for


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    running = Service(settings_for(tmp_path), vim=lab_vim())
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def down(host: str) -> Event:
    return Event("compute.host.down", host, "down", time.time(), monitor="test")


def up(host: str) -> Event:
    return Event("compute.host.down", host, "up", time.time(), monitor="test")


def host_state(service: Service, host: str) -> str | None:
    vertex = service.graph.get(make_key("host", host))
    return None if vertex is None else vertex.raw_state


async def test_a_host_in_maintenance_going_down_is_no_fault(service: Service) -> None:
    service.maintenance_part.mark("compute1", True)
    assert host_state(service, "compute1") == "maintenance"
    await service.submit([down("compute1")])
    await service.bus.drain()
    assert await service.faults.active_for("compute1", None) is None
    assert not service.inspector.active
    # Not returned until its monitor hears it again.
    heard = service.maintenance_part.reach.heard
    assert not heard("compute1")
    await service.submit([up("compute1")])
    await service.bus.drain()
    assert heard("compute1")

    service.maintenance_part.mark("compute1", False)
    assert host_state(service, "compute1") == "up"
    await service.submit([down("compute1")])
    await service.bus.drain()
    assert ("host", "compute1") in service.inspector.active


async def test_notices_link_to_the_port_the_api_bound(service: Service) -> None:
    # `api.port = 0` picks a port: owners must be sent where the API really listens.
    service.maintenance_part.listening("http://127.0.0.1:45678/")
    assert service.maintenance_part.reach.base_url == "http://127.0.0.1:45678"


async def test_a_host_in_maintenance_before_a_restart_is_still_after_it(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    db = Database(settings.db_url)
    await db.migrate()
    # What a session left when the process stopped: compute2 powered off for its upkeep,
    # the session paused by the admin (so it stays so while this is looked at).
    session = Session(hosts=["compute2"], maintenance_at=0.0, state=START_MAINTENANCE)
    session.host_progress["compute2"] = HostProgress("compute2", state=HOST_IN_MAINTENANCE)
    session.paused = True
    await MaintenanceStore(db).add(session)
    await db.close()
    running = Service(settings, vim=lab_vim())
    await running.start()
    try:
        assert "compute2" in running.topology.maintenance
        assert host_state(running, "compute2") == "maintenance"
        await running.submit([down("compute2")])
        await running.bus.drain()
        assert not running.inspector.active
    finally:
        await running.stop()
