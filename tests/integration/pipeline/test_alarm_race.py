"""A PUT on an alarm while the alarm fires: neither the new definition nor the state
change is lost, in memory or in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.integration.pipeline.conftest import (
    PROJECT_A,
    Consumer,
    Running,
    alarm_for,
    as_project,
    host_down,
)
from tests.integration.pipeline.test_host_fault import settled_fault

Gate = tuple[asyncio.Event, asyncio.Event]


def hold_definition_writes(running: Running, monkeypatch: pytest.MonkeyPatch) -> Gate:
    """Let the store's alarm update begin, then hold it until released: the moment a
    notification can land in the middle of a PUT."""
    store = running.service.alarms.store
    write: Callable[..., Awaitable[None]] = store.update
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> None:
        entered.set()
        await release.wait()
        await write(*args, **kwargs)

    monkeypatch.setattr(store, "update", held)
    return entered, release


async def fire_during_put(
    running: Running, consumer: Consumer, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any]
) -> tuple[str, Any]:
    """Create an alarm on a server of compute1, start a PUT with `change`, fire the
    alarm while the PUT is writing, then let the PUT finish; returns the alarm id and
    the PUT's response."""
    server = next(
        s
        for s in running.vim.servers.values()
        if s.host == "compute1" and s.project_id == PROJECT_A
    )
    owner = as_project(PROJECT_A)
    body = alarm_for(server.id, consumer.url + "/failure")
    created = await running.client.post("/v2/alarms", json=body, headers=owner)
    assert created.status_code == 201, created.text
    alarm = created.json()
    entered, release = hold_definition_writes(running, monkeypatch)
    url = f"/v2/alarms/{alarm['alarm_id']}"
    put = asyncio.create_task(running.client.put(url, json={**alarm, **change}, headers=owner))
    await entered.wait()
    await running.client.put("/events", json=[host_down("compute1")])
    await settled_fault(running, "compute1")
    assert [n["instance_id"] for n in consumer.received] == [server.id]
    release.set()
    return alarm["alarm_id"], await put


async def test_a_put_racing_a_firing_loses_neither(
    running: Running, consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As aodhclient does: the whole alarm back, with the state it read.
    alarm_id, resp = await fire_during_put(running, consumer, monkeypatch, {"name": "renamed"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["name"], resp.json()["state"]) == ("renamed", "alarm")

    owner = as_project(PROJECT_A)
    shown = (await running.client.get(f"/v2/alarms/{alarm_id}", headers=owner)).json()
    assert (shown["name"], shown["state"]) == ("renamed", "alarm")
    stored = await running.service.alarms.store.states([alarm_id])
    assert stored[alarm_id][0] == "alarm"
    history = (await running.client.get(f"/v2/alarms/{alarm_id}/history", headers=owner)).json()
    assert {h["type"] for h in history} >= {"rule change", "state transition", "creation"}

    # Fired once: another report of the same server does not tell the owner again.
    await running.client.put("/events", json=[host_down("compute1")])
    await running.service.bus.drain()
    assert len(consumer.received) == 1


async def test_a_state_set_by_a_put_that_lost_the_race_changes_nothing(
    running: Running, consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    change = {"name": "renamed", "state": "ok"}
    alarm_id, resp = await fire_during_put(running, consumer, monkeypatch, change)
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["errors"][0]["field"] == "state"
    shown = await running.client.get(f"/v2/alarms/{alarm_id}", headers=as_project(PROJECT_A))
    assert shown.json()["state"] == "alarm" and shown.json()["name"] != "renamed"
    stored = await running.service.alarms.store.states([alarm_id])
    assert stored[alarm_id][0] == "alarm"
