"""Accepting events under load: requests share their writes, a failed write keeps and
handles nothing, and acceptance never waits for earlier faults' handling."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from opendoctor.app.intake import EVENTS_TOPIC
from opendoctor.core.model import HOST_DOWN, Event
from opendoctor.store.db import DatabaseUnavailable
from tests.conftest import eventually
from tests.integration.pipeline.conftest import (
    ADMIN,
    Running,
    host_down,
    lab_vim,
    serving,
    settings_for,
)

HOSTS = ["compute1", "compute2", "compute3"]


async def stored_events(r: Running) -> list[dict[str, object]]:
    resp = await r.client.get("/v1/events?limit=1000", headers=ADMIN)
    assert resp.status_code == 200
    return list(resp.json())


async def test_concurrent_requests_share_commits_each_event_stored_once_and_handled(
    running: Running,
) -> None:
    journal = running.service.events.journal
    before = journal.transactions
    bodies = [[host_down(HOSTS[i % 3], "up" if i % 2 else "down")] for i in range(30)]
    answers = await asyncio.gather(*(running.client.put("/events", json=b) for b in bodies))
    assert [a.status_code for a in answers] == [202] * 30
    accepted = [a.json()["accepted"][0] for a in answers]
    # Handling marks events too, through the same journal: still fewer commits than
    # requests alone would have needed.
    assert journal.transactions - before < len(bodies)

    await running.service.bus.drain()
    events = await stored_events(running)
    assert sorted(e["id"] for e in events) == sorted(accepted)
    assert all(e["processed"] for e in events)


async def test_a_failed_write_is_a_503_and_nothing_is_kept_or_handled(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = running.service.events.journal

    async def refused(batch: object) -> None:
        raise DatabaseUnavailable("disk I/O error")

    with monkeypatch.context() as patch:
        patch.setattr(journal, "_write", refused)
        resp = await running.client.put("/events", json=[host_down("compute1")])
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    await running.service.bus.drain()
    assert running.service.inspector.active == {}
    assert await stored_events(running) == []

    # Sent again once the database takes writes (as a monitor does after a 503).
    resp = await running.client.put("/events", json=[host_down("compute1")])
    assert resp.status_code == 202
    await running.service.bus.drain()
    assert ("host", "compute1") in running.service.inspector.active


async def test_events_are_accepted_while_every_handler_is_busy(tmp_path: Path, db_url: str) -> None:
    # One worker for the bus, held by compute1's fault: compute2's event is still
    # accepted (stored, queued) at once, and handled once the worker is free.
    settings = settings_for(tmp_path, database_url=db_url, bus={"workers": 1})
    async with serving(settings, lab_vim()) as r:
        release, holding = asyncio.Event(), asyncio.Event()

        async def slow(event: Event) -> None:
            if event.hostname == "compute1":
                holding.set()
                await release.wait()

        r.service.bus.subscribe(EVENTS_TOPIC, slow)
        first = await r.client.put("/events", json=[host_down("compute1")])
        assert first.status_code == 202
        await holding.wait()

        resp = await asyncio.wait_for(r.client.put("/events", json=[host_down("compute2")]), 10)
        assert resp.status_code == 202
        assert not release.is_set()
        [stored] = [e for e in await stored_events(r) if e["hostname"] == "compute2"]
        assert stored["processed"] is False  # accepted, waiting for the worker

        release.set()
        await r.service.bus.drain()
        assert ("host", "compute2") in r.service.inspector.active
        assert all(e["processed"] for e in await stored_events(r))


async def test_events_stored_but_never_handed_over_are_handled_after_a_restart(
    tmp_path: Path, db_url: str
) -> None:
    settings = settings_for(tmp_path, database_url=db_url)
    lost = Event(HOST_DOWN, "compute2", "down", time.time(), monitor="test")
    async with serving(settings, lab_vim()) as r:
        # Stored, then the process died before the bus had it.
        await r.service.events.add([lost])
    async with serving(settings, lab_vim()) as r:
        fault = await eventually(
            lambda: r.service.inspector.active.get(("host", "compute2")),
            what="the replayed event's fault",
        )
        assert fault.id  # opened from the replayed event
        await r.service.bus.drain()
        [stored] = await stored_events(r)
        assert stored["id"] == lost.id and stored["processed"] is True


async def test_events_the_spool_kept_are_journaled_and_handled_after_a_restart(
    tmp_path: Path,
) -> None:
    # The front loop's events are accepted once in the spool (store/event_spool.py).
    settings = settings_for(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/od.db")
    lost = Event(HOST_DOWN, "compute3", "down", time.time(), monitor="test")
    async with serving(settings, lab_vim()) as r:
        assert r.service.events.spool is not None
        # Kept, then the process died before the service's loop had them.
        await r.service.events.spool.add([lost])
    async with serving(settings, lab_vim()) as r:
        await eventually(
            lambda: r.service.inspector.active.get(("host", "compute3")),
            what="the spooled event's fault",
        )
        await r.service.bus.drain()
        [stored] = await stored_events(r)
        assert stored["id"] == lost.id and stored["processed"] is True
        assert r.service.events.spool is not None
        assert await r.service.events.spool.held() == []
