"""Leases and leader election on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from opendoctor.monitor.leader import Leadership
from opendoctor.store.db import Database
from opendoctor.store.leases import LeaseStore
from tests.conftest import eventually


@pytest.fixture
async def leases(db_url: str) -> AsyncIterator[LeaseStore]:
    db = Database(db_url)
    await db.migrate()
    yield LeaseStore(db)
    await db.close()


async def test_one_holder_at_a_time_until_the_lease_runs_out(leases: LeaseStore) -> None:
    assert await leases.acquire("monitor", "a", ttl=0.3)
    assert not await leases.acquire("monitor", "b", ttl=0.3)
    assert await leases.acquire("monitor", "a", ttl=0.3)  # renewal
    assert await leases.holder("monitor") == "a"
    started = time.monotonic()
    # a stops renewing: b gets it once a's lease has run out, not before.
    await eventually(lambda: leases.acquire("monitor", "b", ttl=5), what="b takes over")
    assert time.monotonic() - started >= 0.25
    assert await leases.holder("monitor") == "b"
    assert not await leases.acquire("monitor", "a", ttl=0.3)


async def test_a_released_lease_is_free_at_once(leases: LeaseStore) -> None:
    assert await leases.acquire("inspector", "a", ttl=60)
    await leases.release("inspector", "b")  # not b's to release
    assert await leases.holder("inspector") == "a"
    await leases.release("inspector", "a")
    assert await leases.holder("inspector") is None
    assert await leases.acquire("inspector", "b", ttl=60)


async def test_roles_are_independent(leases: LeaseStore) -> None:
    assert await leases.acquire("monitor-0", "a", ttl=60)
    assert await leases.acquire("monitor-1", "b", ttl=60)


async def test_a_killed_leader_is_replaced_and_never_two_lead(leases: LeaseStore) -> None:
    leading: list[tuple[str, bool]] = []

    def watcher(name: str) -> Callable[[bool], Awaitable[None]]:
        async def changed(now: bool) -> None:
            leading.append((name, now))

        return changed

    a = Leadership(leases, "notifier", "a", ttl=0.6, on_change=watcher("a"))
    b = Leadership(leases, "notifier", "b", ttl=0.6, on_change=watcher("b"))
    await a.attempt()
    await b.attempt()
    assert (a.leading, b.leading) == (True, False)
    a.start()
    b.start()
    # a dies without a word: its task stops and its lease is not released.
    assert a._task is not None
    a._task.cancel()
    died = time.monotonic()
    await asyncio.wait_for(b.changed.wait(), timeout=5)
    took = time.monotonic() - died
    assert b.leading and took < 0.6 + 0.2 + 0.5
    await b.stop()
    assert leading == [("a", True), ("b", True), ("b", False)]


async def test_a_leader_that_cannot_renew_steps_down(leases: LeaseStore, tmp_path: Path) -> None:
    changes: list[bool] = []

    async def changed(now: bool) -> None:
        changes.append(now)

    lead = Leadership(leases, "monitor", "a", ttl=0.3, on_change=changed)
    await lead.attempt()
    assert lead.leading
    # Its database goes away (nothing listens there).
    broken = Database("postgresql+asyncpg://postgres@127.0.0.1:9/none")
    lead.leases = LeaseStore(broken)
    await eventually(lambda: _attempt_and_check(lead), what="stepped down")
    assert changes == [True, False]
    await broken.close()


async def _attempt_and_check(lead: Leadership) -> bool:
    await lead.attempt()
    return not lead.leading


async def test_many_leases_are_claimed_renewed_read_and_released_at_once(
    leases: LeaseStore,
) -> None:
    """The bus's presence: one statement for a replica's partitions."""
    assert await leases.acquire_many(["p.0", "p.2"], "a", ttl=60) == {"p.0", "p.2"}
    # b gets what is free, not what a holds; a renews its own.
    assert await leases.acquire_many(["p.1", "p.2"], "b", ttl=60) == {"p.1"}
    assert await leases.acquire_many(["p.0", "p.2"], "a", ttl=60) == {"p.0", "p.2"}
    assert await leases.holders(["p.0", "p.1", "p.2", "p.3"]) == {
        "p.0": "a",
        "p.1": "b",
        "p.2": "a",
    }
    await leases.release_many(["p.0", "p.1"], "a")  # p.1 is not a's to release
    assert await leases.holders(["p.0", "p.1", "p.2"]) == {"p.1": "b", "p.2": "a"}
    assert await leases.acquire_many([], "a", ttl=60) == set()
    assert await leases.holders([]) == {}


async def test_an_expired_claim_is_nobody_s_and_can_be_taken(leases: LeaseStore) -> None:
    assert await leases.acquire_many(["q.0"], "a", ttl=0.2) == {"q.0"}
    await eventually(lambda: _nobody(leases, "q.0"), what="the claim to expire")
    assert await leases.acquire_many(["q.0"], "b", ttl=60) == {"q.0"}


async def _nobody(leases: LeaseStore, name: str) -> bool:
    return name not in await leases.holders([name])
