"""One graph across partitions: two inspectors, each consuming half the bus partitions,
and an api process of its own. A template about two hosts whose events go to different
inspectors fires, once; the api process shows the same graph."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.bus.amqp import partition_of
from opendoctor.workflow.service import TemplateWorkflows
from tests import pg
from tests.conftest import MONITOR, eventually
from tests.integration.amqp.conftest import Names
from tests.integration.pipeline.conftest import ADMIN, host_down, lab_vim, settings_for

PARTITIONS = 4
# compute1 and compute2 fall in different partitions of four (0 and 2): the first
# inspector consumes 0 and 1, the second 2 and 3.
SHARES = {"inspector-0": [0, 1], "inspector-1": [2, 3]}

TWO_HOSTS = """
name: two_hosts_behind_one_switch
entities:
  a1: {category: ALARM, name: compute.host.down}
  a2: {category: ALARM, name: compute.host.down}
  h1: {type: host}
  h2: {type: host}
  sw: {type: switch}
scenarios:
  - condition: a1 [on] h1 AND a2 [on] h2 AND sw [connects] h1 AND sw [connects] h2
    actions:
      - raise_alarm: {target: sw, name: switch.suspect, severity: WARNING, causing_alarm: a1}
      - run_workflow: {workflow: check_switch, target: sw}
"""


class Deployment:
    def __init__(self, services: dict[str, Service]) -> None:
        self.services = services
        self.api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(services["api"].facade, manage=False)),
            headers=MONITOR,
            base_url="http://api",
        )

    @property
    def inspectors(self) -> list[Service]:
        return [s for name, s in self.services.items() if name.startswith("inspector")]


@pytest.fixture
async def deployment(
    tmp_path: Path, amqp_url: str, names: Names, pg_databases: pg.Databases
) -> AsyncIterator[Deployment]:
    database = await pg_databases.take()
    bus: dict[str, Any] = {
        "kind": "amqp",
        "url": amqp_url,
        "prefix": names.bus_prefix(["events", "notifications"], PARTITIONS),
        "partitions": PARTITIONS,
        "retry_delay": 0.05,
    }
    often = {
        "fault_sync_interval": 0.1,
        "topology_sync_interval": 0.1,
        "template_sync_interval": 0.1,
    }
    roles: dict[str, list[str]] = {
        "api": ["api"],
        "inspector-0": ["inspector", "notifier"],
        "inspector-1": ["inspector", "notifier"],
    }
    services = {
        name: Service(
            settings_for(
                tmp_path / name,
                database_url=pg.url_for(database),
                bus={**bus, "consume": SHARES.get(name)},
                roles=role,
                recovery={"enabled": False},
                inspector=often,
            ),
            vim=lab_vim(),
        )
        for name, role in roles.items()
    }
    started: list[Service] = []
    d = Deployment(services)
    try:
        for name in ("inspector-0", "inspector-1", "api"):
            await services[name].start()
            started.append(services[name])
        yield d
    finally:
        await d.api.aclose()
        for service in reversed(started):
            await service.stop()
        await pg_databases.give_back(database)


def requested(service: Service) -> list[str]:
    workflows = service.inspector.effects.workflows
    assert isinstance(workflows, TemplateWorkflows)
    return [workflow for workflow, _ in workflows.requested]


async def test_a_template_over_two_partitions_fires_once_and_every_api_shows_it(
    deployment: Deployment,
) -> None:
    assert partition_of("compute1", PARTITIONS) != partition_of("compute2", PARTITIONS)
    api = deployment.api
    headers = {**ADMIN, "content-type": "application/yaml"}
    resp = await api.post("/v1/templates", content=TWO_HOSTS, headers=headers)
    assert resp.status_code == 201, resp.text
    topology = {
        "entities": [{"type": "switch", "id": "tor-9", "state": "up"}],
        "relations": [
            {"source": "switch:tor-9", "target": f"host:compute{i}", "label": "connects"}
            for i in (1, 2)
        ],
    }
    resp = await api.post("/v1/topology", json=topology, headers=ADMIN)
    assert resp.status_code == 200, resp.text
    for service in deployment.inspectors:
        await eventually(
            lambda s=service: (
                "two_hosts_behind_one_switch" in s.engine.templates
                and s.graph.get("switch:tor-9") is not None
            ),
            what="the template and the switch in every inspector",
        )

    resp = await api.put("/events", json=[host_down("compute1"), host_down("compute2")])
    assert resp.status_code == 202, resp.text
    # Each inspector handles the fault of its own partition ...
    first, second = deployment.inspectors
    await eventually(lambda: ("host", "compute1") in first.inspector.active, what="compute1")
    await eventually(lambda: ("host", "compute2") in second.inspector.active, what="compute2")
    assert ("host", "compute2") not in first.inspector.active
    # ... and sees the other's: the template fires in both graphs and in the api's view.
    suspect = "alarm:switch.suspect@switch:tor-9"
    for service in deployment.services.values():
        await eventually(lambda s=service: suspect in s.engine.alarms, what="the deduced alarm")
    resp = await api.get("/v1/alarms", headers=ADMIN)
    assert resp.status_code == 200, resp.text
    assert "switch.suspect" in {a["name"] for a in resp.json()["alarms"]}

    # Only one acts: the inspector of the newer fault.
    for service in deployment.inspectors:
        await asyncio.gather(*service._reactions)
    counts = [requested(s).count("check_switch") for s in deployment.inspectors]
    assert sum(counts) == 1, counts
    faults = [s.inspector.active[("host", f"compute{i}")] for i, s in ((1, first), (2, second))]
    newest = max(range(2), key=lambda i: (faults[i].started, faults[i].id))
    assert counts[newest] == 1

    # A fault cleared in one partition leaves the others' graphs too.
    resp = await api.put("/events", json=[host_down("compute2", status="up")])
    assert resp.status_code == 202, resp.text
    for service in deployment.services.values():
        await eventually(
            lambda s=service: suspect not in s.engine.alarms, what="the deduced alarm gone"
        )


async def test_a_fault_another_replica_cleared_leaves_the_one_that_opened_it(
    deployment: Deployment,
) -> None:
    """After a partition goes back to a returning replica, the events that clear a fault
    go to it: the replica that opened the fault learns from the store and drops it."""
    first, _ = deployment.inspectors
    resp = await deployment.api.put("/events", json=[host_down("compute1")])
    assert resp.status_code == 202, resp.text
    fault = await eventually(
        lambda: first.inspector.active.get(("host", "compute1")), what="the fault opened"
    )
    await first.inspector.done[fault.id].wait()
    await eventually(
        lambda: f"alarm:{fault.id}" in deployment.services["api"].fault_graph.alarms,
        what="the fault in the api's view",
    )
    # The replica that now has the partition clears it (it stores what it did).
    other = await first.faults.get(fault.id)
    assert other is not None
    other.status, other.cleared = "cleared", other.started + 1
    await first.faults.save(other)

    await eventually(
        lambda: ("host", "compute1") not in first.inspector.active, what="the fault dropped"
    )
    assert first.graph.get(f"alarm:{fault.id}") is None
    assert first.engine.alarms == {}  # what host_down deduced went with it
    view = deployment.services["api"]
    await eventually(lambda: view.graph.get(f"alarm:{fault.id}") is None, what="gone from view")
