"""A consumer that is down for 30 s gets its backlog when it returns: the scaled-out
engines (PostgreSQL outbox, events over RabbitMQ), a real HTTP consumer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.core.notifications import OutboxEntry
from opendoctor.tools.consumer import make_app
from tests import pg
from tests.conftest import MONITOR, eventually
from tests.integration.amqp.conftest import Names
from tests.integration.pipeline.conftest import (
    Consumer,
    alarm_for,
    as_project,
    free_port,
    host_down,
    lab_vim,
    settings_for,
)

OUTAGE = 30.0

# The consumer is down for 30 s of real time.
pytestmark = pytest.mark.slow


async def test_a_consumer_down_for_30_s_gets_the_backlog(
    tmp_path: Path, amqp_url: str, names: Names, pg_databases: pg.Databases
) -> None:
    database = await pg_databases.take()
    port = free_port()
    consumer = Consumer(f"http://127.0.0.1:{port}", make_app(quiet=True))
    settings = settings_for(
        tmp_path,
        database_url=pg.url_for(database),
        bus={
            "kind": "amqp",
            "url": amqp_url,
            "prefix": names.bus_prefix(["events"], 2),
            "partitions": 2,
        },
        recovery={"enabled": False},
        notifier={"backoff_initial": 0.2, "backoff_max": 2.0, "max_attempts": 60},
    )
    service = Service(settings, vim=lab_vim())
    await service.start()
    transport = httpx.ASGITransport(app=create_app(service.facade, manage=False))
    try:
        async with httpx.AsyncClient(
            transport=transport, headers=MONITOR, base_url="http://od"
        ) as client:
            victims = [s for s in service.topology.servers.values() if s.host == "compute1"]
            for server in victims:
                resp = await client.post(
                    "/v2/alarms",
                    json=alarm_for(server.id, consumer.url + "/failure"),
                    headers=as_project(server.project_id),
                )
                assert resp.status_code == 201
            assert (await client.put("/events", json=[host_down("compute1")])).status_code == 202

            # Nobody answers at the consumer's address: every first attempt fails.
            async def pending() -> bool:
                entries = await service.outbox.list(status="pending", limit=100)
                return len(entries) == len(victims) and all(e.attempts >= 1 for e in entries)

            await eventually(pending, timeout=30, what="notifications pending")
            await asyncio.sleep(OUTAGE)  # the outage itself, not a wait for something

            await consumer.start(port)
            await eventually(
                lambda: {r["instance_id"] for r in consumer.received} == {s.id for s in victims},
                timeout=30,
                what="the backlog delivered",
            )

            async def recorded() -> list[OutboxEntry]:
                # The outcome is written after the consumer answered: wait for the write.
                done = await service.outbox.list(status="delivered", limit=100)
                return done if len(done) == len(victims) else []

            delivered = await eventually(recorded, what="deliveries recorded")
            assert all(e.attempts > 1 for e in delivered)
            # One callback per notification: the same request id on every retry.
            assert len({r["request_id"] for r in consumer.received}) == len(victims)
    finally:
        await consumer.stop()
        await service.stop()
        await pg_databases.give_back(database)
