"""The front loop (app/front.py): events are taken in while the service's own loop is
busy, and every other request still reaches the service, streams and lifespan included.

The service here runs on the test's loop, as `opendoctor serve` runs it on its main
thread; uvicorn and the events API run on the front loop's thread. A test that makes a
blocking call from the test's loop holds the service's loop for as long as it lasts.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from opendoctor.app.intake import EVENTS_TOPIC, Intake
from opendoctor.app.server import Serving, serving
from opendoctor.app.service import Service
from opendoctor.bus import InProcessBus
from opendoctor.core.model import HOST_DOWN, Event
from opendoctor.core.settings import Settings
from opendoctor.infra.loops import LoopThread
from opendoctor.store.db import Database
from opendoctor.store.pipeline import EventStore
from tests.conftest import MONITOR, eventually
from tests.integration.pipeline.conftest import ADMIN, host_down, lab_vim, settings_for


def blocking(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One request made without yielding: the calling loop does nothing meanwhile."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {**MONITOR, **ADMIN, "content-type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[Service, Serving]]:
    service = Service(settings, vim=lab_vim())
    async with serving(service) as s:
        yield service, s


def front_settings(tmp_path: Path, db_url: str, **kw: Any) -> Settings:
    """The front on a thread unless `front_loop` says otherwise (test_front_process.py)."""
    return settings_for(tmp_path, database_url=db_url, api={"port": 0, "front_loop": "on", **kw})


async def test_events_are_accepted_while_the_service_loop_does_not_turn(tmp_path: Path) -> None:
    async with served(front_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/od.db")) as (
        service,
        s,
    ):
        assert s.mode == "thread"
        # The service's loop is held for the whole call: stored and answered without it.
        status, body = blocking("PUT", f"{s.url}/events", [host_down("compute2")])
        assert status == 202, body
        [accepted] = body["accepted"]
        assert ("host", "compute2") not in service.inspector.active  # not handled yet

        # Handed over once the loop turns again, and handled there.
        await eventually(
            lambda: ("host", "compute2") in service.inspector.active, what="compute2's fault"
        )
        # Recorded in the journal, and out of the spool that kept it until then.
        async with httpx.AsyncClient(base_url=s.url, headers=ADMIN) as client:
            await eventually(
                lambda: _processed(client, accepted), what="the event in the journal, handled"
            )
        assert service.events.spool is not None
        assert await service.events.spool.held() == []


async def _processed(client: httpx.AsyncClient, event_id: str) -> bool:
    resp = await client.get("/v1/events", params={"limit": 10})
    return any(e["id"] == event_id and e["processed"] for e in resp.json())


async def test_other_requests_are_served_on_the_service_loop(tmp_path: Path) -> None:
    async with served(front_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/od.db")) as (
        _,
        s,
    ):
        # Any other request needs the service's loop: it is not answered while that loop
        # is held, and is when it turns.
        with pytest.raises(TimeoutError):
            blocking("GET", f"{s.url}/v2/alarms", timeout=0.5)
        await the_rest_is_served(s.url)


async def the_rest_is_served(url: str) -> None:
    """What crosses from the front to the service (and back) works as on one loop."""
    async with httpx.AsyncClient(base_url=url, headers={**ADMIN, **MONITOR}) as client:
        resp = await client.get("/health")
        assert resp.status_code == 200 and resp.json()["status"] == "ok"
        # A refusal made by the front has the API's error shape.
        bad = await client.put("/events", json=[{"type": "compute.host.down"}])
        assert bad.status_code == 400
        assert bad.json()["error"]["errors"][0]["field"] == "[0].details"
        unknown = await client.put("/events", json=[host_down("nowhere")])
        assert unknown.status_code == 422
        assert "nowhere" in unknown.json()["error"]["message"]
        # A stream: each chunk crosses from the service to the front.
        async with client.stream("GET", "/v1/stream") as stream:
            assert stream.status_code == 200
            resp = await client.put("/events", json=[host_down("compute1")])
            assert resp.status_code == 202
            async for line in stream.aiter_lines():
                if "compute1" in line:
                    break


async def test_events_through_the_front_loop_are_handled_on_each_engine(
    tmp_path: Path, db_url: str
) -> None:
    # On PostgreSQL the journal's engine belongs to the service's loop: the front loop
    # hands the events over to it, and answers once they are stored.
    async with served(front_settings(tmp_path, db_url)) as (service, s):
        assert s.mode == "thread"
        async with httpx.AsyncClient(base_url=s.url, headers=MONITOR) as client:
            answers = [
                await client.put("/events", json=[host_down(h)]) for h in ("compute1", "compute3")
            ]
            assert [a.status_code for a in answers] == [202, 202]
        await eventually(
            lambda: {("host", "compute1"), ("host", "compute3")} <= service.inspector.active.keys(),
            what="both hosts' faults",
        )


async def test_without_a_front_loop_everything_runs_on_the_service_loop(tmp_path: Path) -> None:
    settings = front_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/od.db", front_loop="off")
    async with served(settings) as (service, s):
        assert s.mode == "off"
        async with httpx.AsyncClient(base_url=s.url, headers=MONITOR) as client:
            resp = await client.put("/events", json=[host_down("compute1")])
            assert resp.status_code == 202
        await eventually(
            lambda: ("host", "compute1") in service.inspector.active, what="compute1's fault"
        )


async def test_a_caller_that_goes_away_still_leaves_its_events_handed_over(
    tmp_path: Path,
) -> None:
    # The service's loop on a thread here; this test's loop is the front's.
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/od.db")
    await db.migrate()
    events = EventStore(db)
    bus = InProcessBus()
    intake = Intake(events, bus)
    got: list[Event] = []
    arrived = threading.Event()

    async def handler(event: Event) -> None:
        got.append(event)
        arrived.set()

    bus.subscribe(EVENTS_TOPIC, handler)
    home = LoopThread("service")
    home.start()
    try:
        await home.run(intake.start())
        event = Event(HOST_DOWN, "compute1", "down", time.time(), monitor="test")
        submit = asyncio.ensure_future(intake.submit([event]))
        await asyncio.sleep(0)  # under way: its events are being written to the spool
        submit.cancel()
        assert await asyncio.to_thread(arrived.wait, 10), "the event never reached the bus"
        assert [e.id for e in got] == [event.id]
        await home.run(intake.stop())
        assert events.spool is not None
        assert await events.spool.held() == []  # the journal has it
    finally:
        await home.run(events.close())
        await home.run(db.close())
        home.stop()
