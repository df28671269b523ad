"""Maintenance inside the whole service (memory VIM): a host a session holds in
maintenance that goes down raises no fault and tells nobody, and the graph shows it in
maintenance; once returned, the same report is a fault again."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opendoctor.app.service import Service
from opendoctor.core.model import Event
from opendoctor.inspector.graph.model import make_key
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

    service.maintenance_part.mark("compute1", False)
    assert host_state(service, "compute1") == "up"
    await service.submit([down("compute1")])
    await service.bus.drain()
    assert ("host", "compute1") in service.inspector.active


async def test_notices_link_to_the_port_the_api_bound(service: Service) -> None:
    # `api.port = 0` picks a port: owners must be sent where the API really listens.
    service.maintenance_part.listening("http://127.0.0.1:45678/")
    assert service.maintenance_part.reach.base_url == "http://127.0.0.1:45678"
