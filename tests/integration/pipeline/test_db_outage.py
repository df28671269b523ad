"""A database that stops answering: requests get a clear 503 (never a 500, never a 202
for an event that was not stored), and the service recovers by itself when it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.infra import metrics
from opendoctor.store.db import unavailable
from tests import pg
from tests.conftest import MONITOR, eventually
from tests.integration.pipeline.conftest import (
    ADMIN,
    alarm_for,
    as_project,
    host_down,
    lab_vim,
    settings_for,
)
from tests.pg import assert_database_down
from tests.tcpproxy import TcpProxy, free_port

SERVER = "00000000-0000-0000-0000-000000000001"  # vm1, on compute1, of project-a


async def needs_the_database(client: httpx.AsyncClient) -> list[httpx.Response]:
    """One request of each kind that cannot be answered without the database."""
    return [
        await client.get("/v1/faults", headers=ADMIN),
        await client.get("/v1/events", headers=ADMIN),
        await client.get("/v1/notifications", headers=ADMIN),
        await client.post(
            "/v2/alarms", json=alarm_for(SERVER, "log://"), headers=as_project("project-a")
        ),
        await client.put("/events", json=[host_down("compute1")]),
    ]


async def fault_stored(client: httpx.AsyncClient, host: str) -> bool:
    faults = (await client.get("/v1/faults", headers=ADMIN)).json()
    return host in {f["hostname"] for f in faults}


async def test_nothing_answering_at_the_database_url_is_a_503(tmp_path: Path) -> None:
    url = pg.url_for("opendoctor", port=free_port())  # nothing listens there
    service = Service(settings_for(tmp_path, database_url=url), vim=lab_vim())
    # Not started (that migrates, which needs the database): the API needs the topology.
    service.topology.load(await service.vim.list_hosts(), await service.vim.list_servers())
    transport = httpx.ASGITransport(app=create_app(service.facade, manage=False))
    try:
        async with httpx.AsyncClient(
            transport=transport, headers=MONITOR, base_url="http://od"
        ) as client:
            for resp in await needs_the_database(client):
                assert_database_down(resp)
            # What needs no database still answers.
            assert (await client.get("/health")).status_code == 200
    finally:
        await service.stop()


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[tuple[Service, httpx.AsyncClient, TcpProxy]]:
    """A started service whose PostgreSQL is reached through a proxy the test can cut."""
    admin = make_url(pg.ADMIN_URL)
    name = await pg.create_database()
    proxy = TcpProxy(admin.host or "127.0.0.1", admin.port or 5432)
    await proxy.restore()
    url = pg.url_for(name, port=proxy.port)
    service = Service(settings_for(tmp_path, database_url=url), vim=lab_vim())
    try:
        await service.start()
        transport = httpx.ASGITransport(app=create_app(service.facade, manage=False))
        async with httpx.AsyncClient(
            transport=transport, headers=MONITOR, base_url="http://od"
        ) as client:
            yield service, client, proxy
    finally:
        await service.stop()  # needs no database
        await proxy.cut()
        await pg.drop_database(name)


async def test_a_database_outage_is_503_and_the_service_recovers_by_itself(
    proxied: tuple[Service, httpx.AsyncClient, TcpProxy],
) -> None:
    service, client, proxy = proxied
    before = await client.put("/events", json=[host_down("compute2")])
    assert before.status_code == 202
    accepted = before.json()["accepted"]

    await eventually(lambda: fault_stored(client, "compute2"), what="compute2's fault stored")

    await proxy.cut()
    for resp in await needs_the_database(client):
        assert_database_down(resp)
    await service.bus.drain()
    # Refused, so not handled either: nothing was opened for an event nobody stored.
    assert ("host", "compute1") not in service.inspector.active

    await proxy.restore()
    # No restart, no reconfiguration: the pool finds its dead connections and reconnects.
    for resp in await needs_the_database(client):
        assert resp.is_success, resp.text
    accepted += resp.json()["accepted"]
    stored = {e["id"] for e in (await client.get("/v1/events", headers=ADMIN)).json()}
    # Every event answered 202 is stored.
    assert set(accepted) <= stored
    assert await fault_stored(client, "compute2")
    # compute1's event, refused while the database was away, was sent again once it was
    # back (as a monitor does after a 503): now it is handled, its fault stored.
    await eventually(
        lambda: fault_stored(client, "compute1"), timeout=15, what="compute1's fault stored"
    )


async def test_a_connection_dropped_mid_statement_means_the_database_is_down(
    proxied: tuple[Service, httpx.AsyncClient, TcpProxy],
) -> None:
    service, _, proxy = proxied
    name = make_url(service.db.url).database

    async def slow() -> None:
        async with service.db.engine.connect() as conn:
            await conn.execute(text("SELECT pg_sleep(5)"))

    async def running() -> bool:
        admin = await asyncpg.connect(pg.ADMIN_URL)
        try:
            found = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = $1 AND query LIKE 'SELECT pg_sleep%'",
                name,
            )
        finally:
            await admin.close()
        return bool(found)

    query = asyncio.create_task(slow())
    await eventually(running, what="the statement under way")
    await proxy.cut()
    with pytest.raises(DBAPIError) as caught:
        await query
    # What the API answers 503 to (and the pool throws the connection away).
    assert caught.value.connection_invalidated
    assert unavailable(caught.value)


async def test_owners_told_while_the_database_is_away_are_recorded_once_it_is_back(
    proxied: tuple[Service, httpx.AsyncClient, TcpProxy],
) -> None:
    service, client, proxy = proxied
    owner = as_project("project-a")
    # The owner's endpoint holds its answer until the database is away: the event is
    # accepted (stored) before, its callback's outcome comes after.
    arrived, answer = asyncio.Event(), asyncio.Event()

    async def failure(request: web.Request) -> web.Response:
        arrived.set()
        await answer.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/failure", failure)
    port = free_port()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}/failure"
        resp = await client.post("/v2/alarms", json=alarm_for(SERVER, url), headers=owner)
        assert resp.status_code == 201
        alarm_id = resp.json()["alarm_id"]

        delivered = metrics.NOTIFICATIONS.labels("delivered")
        before = delivered._value.get()
        assert (await client.put("/events", json=[host_down("compute1")])).status_code == 202
        await arrived.wait()
        await proxy.cut()
        answer.set()
        await eventually(lambda: delivered._value.get() > before, what="the owner's answer read")
        await service.bus.drain()
        # Told, while the record of it could not be written.
        alarm = service.index.get(alarm_id)
        assert alarm is not None and alarm.state == "alarm"
    finally:
        answer.set()
        await runner.cleanup()

    await proxy.restore()

    async def recorded() -> list[dict[str, Any]]:
        resp = await client.get("/v1/notifications", headers=ADMIN)
        return list(resp.json()) if resp.status_code == 200 else []

    (entry,) = await eventually(recorded, timeout=15, what="the notification recorded")
    assert entry["alarm_id"] == alarm_id and entry["status"] == "delivered"

    async def fired() -> list[str]:
        # Written after the outbox (an alarm recorded as fired always has its entries).
        history = (await client.get(f"/v2/alarms/{alarm_id}/history", headers=owner)).json()
        return [h["type"] for h in history] if len(history) > 1 else []

    assert await eventually(fired, what="the firing recorded") == ["state transition", "creation"]
    # The fault's handling went on to the end (the server set to error), and the fault
    # is stored too (its own retries back off: it may come a little later).

    async def handled() -> bool:
        faults = (await client.get("/v1/faults", headers=ADMIN)).json()
        return any(f["hostname"] == "compute1" and "T03" in f["trace"] for f in faults)

    await eventually(handled, timeout=15, what="the fault stored, its server in error")
