"""The blocks as separate services (`serve --role`): api, inspector and notifier, each on
its own, sharing PostgreSQL and RabbitMQ, tell the owners of a failed host's servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opendoctor.api.app import create_app
from opendoctor.api.templates import EXAMPLE_TEMPLATE
from opendoctor.app.service import Service
from opendoctor.notifier import remote
from opendoctor.tools.consumer import REPEATS
from tests import pg
from tests.conftest import MONITOR, eventually
from tests.integration.amqp.conftest import Names
from tests.integration.pipeline.conftest import (
    ADMIN,
    Consumer,
    alarm_for,
    as_project,
    host_down,
    lab_vim,
    settings_for,
)

TOPICS = ["events", remote.NOTIFICATIONS_TOPIC]


class Split:
    def __init__(self, services: dict[str, Service]) -> None:
        self.services = services
        self.clients = {
            role: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(s.facade, manage=False)),
                headers=MONITOR,
                base_url=f"http://{role}",
            )
            for role, s in services.items()
        }

    @property
    def api(self) -> httpx.AsyncClient:
        return self.clients["api"]


@pytest.fixture
async def split(
    tmp_path: Path, amqp_url: str, names: Names, pg_databases: pg.Databases
) -> AsyncIterator[Split]:
    database = await pg_databases.take()
    bus = {
        "kind": "amqp",
        "url": amqp_url,
        "prefix": names.bus_prefix(TOPICS, 4),
        "partitions": 4,
        "retry_delay": 0.05,
        "reconnect_interval": 0.2,
    }
    services = {
        role: Service(
            settings_for(
                tmp_path / role,
                database_url=pg.url_for(database),
                bus=bus,
                roles=[role],
                recovery={"enabled": False},
                # Seldom: what must not wait for the periodic take-up of alarm changes
                # shows then.
                notifier={"sync_interval": 60, "backoff_initial": 0.05, "timeout": 1.0},
            ),
            vim=lab_vim(),
        )
        for role in ("api", "inspector", "notifier")
    }
    started: list[Service] = []
    s = Split(services)
    try:
        for service in services.values():
            await service.start()
            started.append(service)
        yield s
    finally:
        for client in s.clients.values():
            await client.aclose()
        for service in reversed(started):
            await service.stop()
        await pg_databases.give_back(database)


async def test_each_role_on_its_own_tells_every_owner(split: Split, consumer: Consumer) -> None:
    api = split.services["api"]
    victims = [s for s in api.topology.servers.values() if s.host == "compute1"]
    for server in victims:
        resp = await split.api.post(
            "/v2/alarms",
            json=alarm_for(server.id, consumer.url + "/failure"),
            headers=as_project(server.project_id),
        )
        assert resp.status_code == 201, resp.text
    # The fault comes at once: the notifier, which learns of alarms from the database,
    # must take up those created before it (not wait for its periodic sync).
    resp = await split.api.put("/events", json=[host_down("compute1")])
    assert resp.status_code == 202, resp.text

    await eventually(
        lambda: {r["instance_id"] for r in consumer.received} == {s.id for s in victims},
        what="every owner told",
    )
    assert all(r["state"] == "error" and r["host"] == "compute1" for r in consumer.received)
    assert len(consumer.received) == len(victims)
    inspector = split.services["inspector"]
    (fault,) = inspector.inspector.active.values()

    async def stored() -> dict[str, Any] | None:
        resp = await split.api.get(f"/v1/faults/{fault.id}", headers=ADMIN)
        body: dict[str, Any] = resp.json()
        return body if resp.status_code == 200 and {"T02", "T09"} <= set(body["trace"]) else None

    # The api process reads the fault from the database; its T09 comes from the outbox
    # the notifier wrote (after the callbacks went out: the owners may have them a moment
    # before it is stored), its T02 from the inspector.
    body = await eventually(stored, what="fault stored with its owners told")
    assert {"T01", "T02", "T09"} <= set(body["trace"])
    assert {n["status"] for n in body["notifications"]} == {"delivered"}
    assert body["trace"]["T09"] == max(n["delivered"] for n in body["notifications"])
    resp = await split.api.get("/v1/faults?status=active", headers=ADMIN)
    assert [f["id"] for f in resp.json()] == [fault.id]


async def test_a_notification_handed_over_twice_reaches_the_owner_with_one_id(
    split: Split, consumer: Consumer
) -> None:
    """As when a notifier replica dies before its ack: the same message comes again."""
    api, notifier = split.services["api"], split.services["notifier"]
    server = next(s for s in api.topology.servers.values() if s.host == "compute2")
    resp = await split.api.post(
        "/v2/alarms",
        json=alarm_for(server.id, consumer.url + "/failure", repeat_actions=True),
        headers=as_project(server.project_id),
    )
    assert resp.status_code == 201, resp.text
    resp = await split.api.put("/events", json=[host_down("compute2")])
    assert resp.status_code == 202, resp.text
    await eventually(lambda: len(consumer.received) == 1, what="owner told")

    inspector = split.services["inspector"]
    (fault,) = inspector.inspector.active.values()
    # Written once the owner was told (send first, write after).
    (entry,) = await eventually(lambda: notifier.outbox.list(fault_id=fault.id), what="stored")
    batches = remote.decode(
        remote.encode(
            [([_event_of(entry.body, fault.id)], entry.body["reason_data"]["root_cause"])]
        )
    )
    await remote.BusNotifications(inspector.bus).notify_many(batches)
    repeats = consumer.app[REPEATS]
    await eventually(lambda: len(repeats) == 1, what="told again")
    # The same request id: the owner's consumer knows it for a repeat and records it once.
    assert repeats == [consumer.received[0]["request_id"]]
    assert len(consumer.received) == 1
    assert len(await notifier.outbox.list(fault_id=fault.id)) == 1


def _event_of(body: dict[str, Any], fault_id: str) -> Any:
    from opendoctor.core.model import NotificationEvent, Trait

    event = body["reason_data"]["event"]
    return NotificationEvent(
        event_type=event["event_type"],
        traits={t[0]: Trait(t[0], t[1], t[2]) for t in event["traits"]},
        message_id=event["message_id"],
        fault_id=fault_id,
    )


async def test_an_api_process_shows_the_graph_and_the_others_serve_health(
    split: Split,
) -> None:
    # An api process mirrors the graph: it shows what the inspectors see.
    resp = await split.api.get("/v1/alarms", headers=ADMIN)
    assert resp.status_code == 200, resp.text
    resp = await split.api.get("/v1/templates", headers=ADMIN)
    assert resp.status_code == 200
    assert "host_down" in {t["name"] for t in resp.json()}
    notifier = split.clients["notifier"]
    resp = await notifier.get("/v1/hosts", headers=ADMIN)
    assert resp.status_code == 404
    health = (await notifier.get("/health")).json()
    assert health["roles"] == ["notifier"] and health["status"] == "ok"
    metrics = await split.clients["inspector"].get("/metrics")
    assert metrics.status_code == 200


async def test_a_template_added_through_one_inspector_reaches_the_others(
    tmp_path: Path, amqp_url: str, names: Names, pg_databases: pg.Databases
) -> None:
    database = await pg_databases.take()
    bus = {"kind": "amqp", "url": amqp_url, "prefix": names.bus_prefix(TOPICS, 2), "partitions": 2}
    pair = [
        Service(
            settings_for(
                tmp_path / name,
                database_url=pg.url_for(database),
                bus=bus,
                roles=["api", "inspector"],
                inspector={"template_sync_interval": 0.05},
            ),
            vim=lab_vim(),
        )
        for name in ("a", "b")
    ]
    started: list[Service] = []
    try:
        for service in pair:
            await service.start()
            started.append(service)
        a, b = pair
        transport = httpx.ASGITransport(app=create_app(a.facade, manage=False))
        async with httpx.AsyncClient(
            transport=transport, headers=MONITOR, base_url="http://a"
        ) as client:
            headers = {**ADMIN, "content-type": "application/yaml"}
            resp = await client.post("/v1/templates", content=EXAMPLE_TEMPLATE, headers=headers)
            assert resp.status_code == 201, resp.text
            name = resp.json()["name"]
            await eventually(lambda: name in b.templates.installed, what="taken up by b")
            assert b.templates.installed[name].origin == "api"
            assert name in b.engine.templates

            resp = await client.delete(f"/v1/templates/{name}", headers=ADMIN)
            assert resp.status_code == 204, resp.text
            await eventually(lambda: name not in b.templates.installed, what="gone from b")
            assert name not in b.engine.templates
    finally:
        for service in reversed(started):
            await service.stop()
        await pg_databases.give_back(database)
