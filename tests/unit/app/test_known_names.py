"""The front process's names (app/front_process.py `KnownNames`): what the service said
it knows is not asked again for a while, and what it does not know is refused as the
service refuses it."""

from __future__ import annotations

from typing import Any

import pytest

from opendoctor.api.events import DoctorEvent, Names
from opendoctor.app import front_process
from opendoctor.app.front_process import KnownNames
from opendoctor.core.errors import RequestError

KNOWN = {"hosts": {"compute1", "compute2"}, "servers": {"vm-1"}, "resources": {"switch:s1"}}


class Service:
    def __init__(self) -> None:
        self.asked: list[Names] = []

    async def ask(self, names: Names) -> Names:
        self.asked.append(names)
        return {kind: [n for n in asked if n in KNOWN[kind]] for kind, asked in names.items()}


def events(*raw: dict[str, Any]) -> list[DoctorEvent]:
    return [DoctorEvent.model_validate(e) for e in raw]


def host_down(host: str) -> dict[str, Any]:
    return {"type": "compute.host.down", "details": {"hostname": host, "status": "down"}}


def vm_missed(host: str, vm: str) -> dict[str, Any]:
    return {
        "type": "compute.instance.heartbeat.missed",
        "details": {"hostname": host, "instance_id": vm, "status": "down"},
    }


async def test_names_the_service_knows_are_asked_once() -> None:
    service = Service()
    names = KnownNames(service.ask)
    await names.check(events(host_down("compute1"), vm_missed("compute1", "vm-1")))
    await names.check(events(vm_missed("compute1", "vm-1")))
    await names.check(events(host_down("compute2"), host_down("compute1")))
    assert service.asked == [
        {"hosts": ["compute1"], "servers": ["vm-1"]},
        {"hosts": ["compute2"]},
    ]


async def test_unknown_names_are_refused_as_the_service_refuses_them() -> None:
    names = KnownNames(Service().ask)
    with pytest.raises(RequestError) as host:
        await names.check(events(host_down("compute1"), host_down("nowhere")))
    assert (host.value.status, host.value.field) == (422, "details.hostname")
    assert "unknown host(s): nowhere" in host.value.message
    with pytest.raises(RequestError) as server:
        await names.check(events(vm_missed("compute1", "vm-gone")))
    assert (server.value.status, server.value.field) == (422, "details.instance_id")
    resource = {
        "type": "resource.down",
        "details": {"resource_type": "switch", "resource_id": "s9", "status": "down"},
    }
    with pytest.raises(RequestError) as graph:
        await names.check(events(resource))
    assert graph.value.field == "details.resource_id"


async def test_an_answer_is_asked_again_once_it_is_old(monkeypatch: pytest.MonkeyPatch) -> None:
    service = Service()
    names = KnownNames(service.ask)
    monkeypatch.setattr(front_process, "KNOWN_FOR", 0.0)
    await names.check(events(host_down("compute1")))
    await names.check(events(host_down("compute1")))
    assert len(service.asked) == 2
