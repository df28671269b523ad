"""The front process (`api.front_loop = "process"`, app/front_process.py): events taken in
by a process of its own, every other request served by the service's process through
the pipe, and a front that dies started again without losing what it accepted.

As in test_front_loop.py, the service runs on the test's loop: a blocking call made from
the test holds the service's loop for as long as it lasts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from opendoctor.app.service import Service
from opendoctor.core.model import HOST_DOWN, Event
from opendoctor.core.settings import BusSettings, Settings
from opendoctor.store.event_spool import EventSpool
from tests import pg
from tests.conftest import MONITOR, eventually
from tests.integration.amqp.conftest import Names
from tests.integration.amqp.conftest import amqp_url as amqp_url  # a fixture of this test too
from tests.integration.amqp.conftest import names as names  # a fixture of this test too
from tests.integration.pipeline.conftest import ADMIN, host_down
from tests.integration.pipeline.test_front_loop import (
    blocking,
    front_settings,
    served,
    the_rest_is_served,
)


def process_settings(tmp_path: Path) -> Settings:
    return front_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/od.db", front_loop="process")


async def test_events_are_accepted_by_the_front_process_while_the_service_loop_is_held(
    tmp_path: Path,
) -> None:
    async with served(process_settings(tmp_path)) as (service, s):
        assert s.mode == "process"
        async with httpx.AsyncClient(base_url=s.url, headers=MONITOR) as client:
            # The first report of a host asks the service whether it knows it ...
            first = await client.put("/events", json=[host_down("compute1")])
            assert first.status_code == 202, first.text
        # ... and the answer holds: the service's loop is not needed for the next one.
        status, body = blocking("PUT", f"{s.url}/events", [host_down("compute1")])
        assert status == 202, body
        [accepted] = body["accepted"]
        async with httpx.AsyncClient(base_url=s.url, headers=ADMIN) as client:
            await eventually(lambda: _processed(client, accepted), what="handled and journaled")
        assert service.events.spool is not None
        await eventually(_spool_empty(service), what="the spool emptied")


def _spool_empty(service: Service) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        assert service.events.spool is not None
        return await service.events.spool.held() == []

    return check


async def _processed(client: httpx.AsyncClient, event_id: str) -> bool:
    resp = await client.get("/v1/events", params={"limit": 10})
    return any(e["id"] == event_id and e["processed"] for e in resp.json())


async def test_every_other_request_goes_through_the_pipe(tmp_path: Path) -> None:
    async with served(process_settings(tmp_path)) as (_, s):
        await the_rest_is_served(s.url)


async def test_many_requests_at_once_all_reach_the_service(tmp_path: Path) -> None:
    # Each its own connection to the service: more at once than a listener's default
    # backlog, and none reset by the service closing its end.
    many = 300
    async with (
        served(process_settings(tmp_path)) as (_, s),
        httpx.AsyncClient(
            base_url=s.url,
            headers=ADMIN,
            limits=httpx.Limits(max_connections=many),
            timeout=60,
        ) as client,
    ):
        answers = await asyncio.gather(*(client.get("/v2/alarms") for _ in range(many)))
        assert [a.status_code for a in answers] == [200] * many


async def test_a_front_that_dies_is_started_again_and_what_it_kept_is_handled(
    tmp_path: Path,
) -> None:
    async with served(process_settings(tmp_path)) as (service, s):
        front = s.front_process
        assert front is not None and front.pid is not None
        first = front.pid
        # Accepted by the front, kept in the spool, then it died before handing it over.
        assert service.events.spool is not None
        kept = Event(type=HOST_DOWN, hostname="compute2", status="down", time=time.time())
        spool = EventSpool(service.events.spool.path)
        await spool.add([kept])
        await spool.close()
        os.kill(first, signal.SIGKILL)

        await eventually(
            lambda: ("host", "compute2") in service.inspector.active, what="the kept event"
        )
        await eventually(lambda: front.pid not in (None, first), what="a new front process")
        assert front.restarts == 1
        async with httpx.AsyncClient(base_url=s.url, headers=MONITOR) as client:
            resp = await client.put("/events", json=[host_down("compute1")])
            assert resp.status_code == 202, resp.text
        await eventually(
            lambda: ("host", "compute1") in service.inspector.active, what="the next event"
        )
        await eventually(_spool_empty(service), what="the spool emptied")


async def test_scaled_out_the_front_process_writes_and_publishes_events_itself(
    tmp_path: Path, pg_databases: pg.Databases, amqp_url: str, names: Names
) -> None:
    """PostgreSQL and RabbitMQ: no spool, and no hand-over either. The front process
    writes the journal and publishes to the broker on connections of its own, so a
    storm's events are accepted while the service's loop is held."""
    name = await pg_databases.take()
    bus = names.events_bus(amqp_url, 2, retry_delay=0.05)
    settings = front_settings(tmp_path, pg.url_for(name), front_loop="auto").model_copy(
        update={"bus": BusSettings.model_validate(bus)}
    )
    try:
        async with served(settings) as (service, s):
            assert s.mode == "process" and service.events.spool is None
            async with httpx.AsyncClient(base_url=s.url, headers=MONITOR) as client:
                # The first report of a host asks the service whether it knows it.
                first = await client.put("/events", json=[host_down("compute2", "up")])
                assert first.status_code == 202, first.text
            status, body = blocking("PUT", f"{s.url}/events", [host_down("compute2")])
            assert status == 202, body
            [accepted] = body["accepted"]
            async with httpx.AsyncClient(base_url=s.url, headers=ADMIN) as client:
                await eventually(
                    lambda: _processed(client, accepted), what="published, handled, journaled"
                )
            assert ("host", "compute2") in service.inspector.active
    finally:
        await pg_databases.give_back(name)
