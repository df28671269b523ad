"""Flap damping through the service: a host that comes back is held down a while, and
one that goes down again in that time keeps the fault it had."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from opendoctor.controller.memory import MemoryVim
from tests.conftest import eventually
from tests.integration.pipeline.conftest import (
    ADMIN,
    Consumer,
    Running,
    host_down,
    lab_vim,
    serving,
    settings_for,
)
from tests.integration.pipeline.test_host_fault import register_all, settled_fault

HOLD, CEILING = 2.0, 3.0


def service(tmp_path: Path, db_url: str, vim: MemoryVim) -> AbstractAsyncContextManager[Running]:
    hold = {"hold_down": HOLD, "hold_down_max": CEILING}
    return serving(settings_for(tmp_path, database_url=db_url, inspector=hold), vim)


async def report(r: Running, host: str, status: str) -> None:
    resp = await r.client.put("/events", json=[host_down(host, status=status)])
    assert resp.status_code == 202, resp.text
    await r.service.bus.drain()


def stored_cleared(r: Running, fault_id: str) -> Callable[[], Awaitable[bool]]:
    """The fault is stored cleared: the last step of a clearance, after the marks undone."""

    async def check() -> bool:
        stored = await r.service.faults.get(fault_id)
        return stored is not None and stored.status == "cleared"

    return check


def vim_changes(r: Running) -> Callable[[], list[tuple[str, ...]]]:
    return lambda: [c for c in r.vim.calls if not c[0].startswith("list_")]


async def test_a_flapping_host_keeps_one_fault_and_nothing_is_redone(
    tmp_path: Path, db_url: str, consumer: Consumer
) -> None:
    async with service(tmp_path, db_url, lab_vim()) as r:
        await register_all(r, consumer)
        await report(r, "compute1", "down")
        fault = await settled_fault(r, "compute1")
        changes = vim_changes(r)
        done_before, told_before = len(changes()), len(consumer.arrivals)
        assert ("force_down", "compute1", "True") in {tuple(map(str, c)) for c in changes()}

        # Back up: not believed yet. The host stays fenced and the fault active.
        await report(r, "compute1", "up")
        assert fault.status == "active" and fault.held_until is not None
        assert r.vim.hosts["compute1"].forced_down is True
        listed = (await r.client.get("/v1/faults?status=active", headers=ADMIN)).json()
        assert [(f["id"], f["held_until"]) for f in listed] == [(fault.id, fault.held_until)]

        # Down again inside the hold-down: the same fault, nothing told or done again.
        await report(r, "compute1", "down")
        assert r.service.inspector.active[("host", "compute1")] is fault
        assert (fault.flaps, fault.held_until) == (1, None)
        assert len(changes()) == done_before and len(consumer.arrivals) == told_before

        # Up again: held twice as long (up to the ceiling), then cleared for good.
        sent = time.time()
        await report(r, "compute1", "up")
        assert fault.held_until is not None
        assert fault.held_until - sent >= min(2 * HOLD, CEILING) - 0.5
        await eventually(stored_cleared(r, fault.id), timeout=15, what="the hold to end")
        assert r.vim.hosts["compute1"].forced_down is False
        everything = (await r.client.get("/v1/faults", headers=ADMIN)).json()
        assert [(f["id"], f["flaps"], f["status"]) for f in everything] == [
            (fault.id, 1, "cleared")
        ]
        assert len(consumer.arrivals) == told_before


async def test_a_held_fault_clears_after_a_restart(tmp_path: Path, db_url: str) -> None:
    vim = lab_vim()
    async with service(tmp_path, db_url, vim) as r:
        await report(r, "compute2", "down")
        fault = await settled_fault(r, "compute2")
        await report(r, "compute2", "up")
        assert fault.held_until is not None
    # Stopped while held: the fault is stored held, the host still fenced.
    assert vim.hosts["compute2"].forced_down is True

    async with service(tmp_path, db_url, vim) as again:
        restored = again.service.inspector.active[("host", "compute2")]
        assert restored.id == fault.id
        assert restored.held_until == pytest.approx(fault.held_until, abs=0.5)
        await eventually(stored_cleared(again, fault.id), timeout=15, what="the hold to end")
        assert vim.hosts["compute2"].forced_down is False
