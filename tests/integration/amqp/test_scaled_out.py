"""The service over RabbitMQ: events on the AMQP bus, owners told through AMQP actions."""

from __future__ import annotations

from pathlib import Path

import httpx

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.bus.amqp import AmqpBus
from opendoctor.core.model import Event
from opendoctor.tools.consumer import RECEIVED, AmqpListener, make_app
from tests import pg
from tests.conftest import MONITOR, eventually
from tests.integration.amqp.conftest import Names
from tests.integration.pipeline.conftest import (
    PROJECT_A,
    PROJECT_B,
    alarm_for,
    as_project,
    host_down,
    lab_vim,
    settings_for,
)


async def test_uc1_with_owners_subscribed_over_amqp(
    tmp_path: Path, amqp_url: str, names: Names
) -> None:
    exchange = names.exchange("alarms")
    base = amqp_url.rstrip("/")
    # Scaled-out settings: events go over the RabbitMQ bus, owners subscribe over AMQP.
    bus = names.events_bus(amqp_url, 4, retry_delay=0.05, reconnect_interval=0.2)
    service = Service(settings_for(tmp_path, bus=bus), vim=lab_vim())
    assert isinstance(service.bus, AmqpBus) and service.amqp_sender is not None
    owners = {p: make_app(quiet=True) for p in (PROJECT_A, PROJECT_B)}
    listeners = [
        AmqpListener(app, f"{base}/?exchange={exchange}&routing_key=alarm.{p}")
        for p, app in owners.items()
    ]
    await service.start()
    transport = httpx.ASGITransport(app=create_app(service.facade, manage=False))
    client = httpx.AsyncClient(transport=transport, headers=MONITOR, base_url="http://opendoctor")
    try:
        for listener in listeners:
            await listener.start()
        victims = [s for s in service.topology.servers.values() if s.host == "compute1"]
        assert {s.project_id for s in victims} == {PROJECT_A, PROJECT_B}
        for server in victims:
            url = f"{base}/?exchange={exchange}&routing_key=alarm.{server.project_id}"
            resp = await client.post(
                "/v2/alarms", json=alarm_for(server.id, url), headers=as_project(server.project_id)
            )
            assert resp.status_code == 201, resp.text
        resp = await client.put("/events", json=[host_down("compute1")])
        assert resp.status_code < 300, resp.text
        await service.bus.drain()
        for project, app in owners.items():
            mine = {s.id for s in victims if s.project_id == project}
            await eventually(
                lambda app=app, mine=mine: {r["instance_id"] for r in app[RECEIVED]} == mine,
                what=f"{project} told over AMQP",
            )
            assert all(r["state"] == "error" and r["host"] == "compute1" for r in app[RECEIVED])
            assert all(r["request_id"].startswith("req-") for r in app[RECEIVED])
    finally:
        await client.aclose()
        for listener in listeners:
            await listener.close()
        await service.stop()


async def test_a_redelivered_event_changes_nothing(
    tmp_path: Path, amqp_url: str, names: Names
) -> None:
    bus = names.events_bus(amqp_url, 2)
    service = Service(settings_for(tmp_path, bus=bus, recovery={"enabled": False}), vim=lab_vim())
    await service.start()
    try:
        event = Event(type="compute.host.down", hostname="compute1", status="down", time=0.0)
        await service.submit([event])
        await service.bus.drain()
        fault = service.inspector.active[("host", "compute1")]
        # The same message again, as RabbitMQ hands over one whose ack was lost.
        await service.bus.publish("events", event, key=event.hostname)
        await service.bus.drain()
        assert fault.repeats == 0
        assert list(service.inspector.active.values()) == [fault]
        # A new report of the same fault (another event id) still counts as a repeat.
        again = Event(type="compute.host.down", hostname="compute1", status="down", time=0.0)
        await service.submit([again])
        await service.bus.drain()
        assert fault.repeats == 1
    finally:
        await service.stop()


async def test_a_batch_of_events_is_handled_in_order_and_once(
    tmp_path: Path, amqp_url: str, names: Names
) -> None:
    """One request's events reach the inspector as one batch per partition: the store is
    asked once for all of them, and each is still handled in order and marked; the same
    batch delivered again (its ack lost) changes nothing."""
    bus = names.events_bus(amqp_url, 1)
    service = Service(settings_for(tmp_path, bus=bus, recovery={"enabled": False}), vim=lab_vim())
    await service.start()
    try:

        def report(host: str, status: str, when: float) -> Event:
            return Event(type="compute.host.down", hostname=host, status=status, time=when)

        batch = [
            report("compute1", "down", 0.0),
            report("compute1", "down", 0.1),  # a repeat of the fault the first opened
            report("compute2", "down", 0.2),
            report("compute2", "down", 0.3),
        ]
        await service.submit(batch)
        await service.bus.drain()
        first = service.inspector.active[("host", "compute1")]
        second = service.inspector.active[("host", "compute2")]
        assert (first.repeats, second.repeats) == (1, 1)
        for event in batch:
            assert await service.events.is_processed(event.id), event
        stored = await service.faults.get(first.id)
        assert stored is not None and stored.status == "active"

        await service.bus.publish_many("events", [(e.hostname, e) for e in batch])
        await service.bus.drain()
        assert (first.repeats, second.repeats) == (1, 1)
        assert set(service.inspector.active) == {("host", "compute1"), ("host", "compute2")}
    finally:
        await service.stop()


async def test_a_replica_takes_up_a_fault_another_opened(
    tmp_path: Path, amqp_url: str, names: Names, pg_databases: pg.Databases
) -> None:
    """Two service processes' worth of state on one database and bus: the fault one
    opened is cleared by the other when the `up` reaches it."""
    database = await pg_databases.take()
    bus = names.events_bus(amqp_url, 2)

    def replica(name: str) -> Service:
        settings = settings_for(
            tmp_path / name,
            database_url=pg.url_for(database),
            bus=bus,
            recovery={"enabled": False},
        )
        return Service(settings, vim=lab_vim())

    first, second = replica("a"), replica("b")
    await first.start()  # the first to subscribe is each partition's active consumer
    await second.start()  # in line behind it, having restored no active fault
    try:
        down = Event(type="compute.host.down", hostname="compute1", status="down", time=0.0)
        await first.submit([down])
        await first.bus.drain()
        opened = first.inspector.active[("host", "compute1")]
        assert second.inspector.active == {}
        await first.stop()  # its partitions pass to the replica in line

        up = Event(type="compute.host.down", hostname="compute1", status="up", time=1.0)
        await second.submit([up])
        await second.bus.drain()
        stored = await second.faults.get(opened.id)
        assert stored is not None and stored.status == "cleared"
        assert second.inspector.active == {}
        assert ("force_down", "compute1", "False") in second.vim.calls  # type: ignore[attr-defined]
    finally:
        await first.stop()
        await second.stop()
        await pg_databases.give_back(database)


async def test_topology_added_through_one_replica_reaches_the_other(
    tmp_path: Path, amqp_url: str, names: Names, pg_databases: pg.Databases
) -> None:
    """A switch posted to one inspector's API is in every inspector's graph, and its
    removal too: the rules of each see the same topology."""
    database = await pg_databases.take()
    bus = names.events_bus(amqp_url, 2)

    def replica(name: str) -> Service:
        settings = settings_for(
            tmp_path / name,
            database_url=pg.url_for(database),
            bus=bus,
            inspector={"topology_sync_interval": 0.1},
        )
        return Service(settings, vim=lab_vim())

    first, second = replica("a"), replica("b")
    await first.start()
    await second.start()
    transport = httpx.ASGITransport(app=create_app(first.facade, manage=False))
    admin = {"X-Project-Id": "admin", "X-Roles": "admin"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://od") as client:
            topology = {
                "entities": [{"type": "switch", "id": "tor-7", "state": "up"}],
                "relations": [
                    {"source": "switch:tor-7", "target": "host:compute1", "label": "connects"}
                ],
            }
            resp = await client.post("/v1/topology", json=topology, headers=admin)
            assert resp.status_code == 200, resp.text
            assert first.graph.get("switch:tor-7") is not None  # at once where it was posted
            await eventually(lambda: second.graph.get("switch:tor-7"), what="the switch there")
            assert second.graph.has_edge("switch:tor-7", "host:compute1", "connects")

            resp = await client.delete("/v1/topology/switch:tor-7", headers=admin)
            assert resp.status_code == 204
            await eventually(
                lambda: second.graph.get("switch:tor-7") is None, what="the switch gone there"
            )
    finally:
        await first.stop()
        await second.stop()
        await pg_databases.give_back(database)
