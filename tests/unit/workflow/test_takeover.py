"""Several engines on one PostgreSQL database: each runs the executions it started; when
one dies, another takes its executions over once the dead one's lease has lapsed, and not
before; a live engine's executions are steered by it, also when another process is
asked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests import pg
from tests.conftest import eventually
from tests.unit.workflow.bed import CHAIN, Bed, bed_on

SAFE_CHAIN = CHAIN.replace("SAFE", "true")


@pytest.fixture
async def bed(pg_databases: pg.Databases) -> AsyncIterator[Bed]:
    name = await pg_databases.take()
    try:
        async with bed_on(pg.url_for(name)) as bed:
            yield bed
    finally:
        await pg_databases.give_back(name)


async def test_a_dead_engines_executions_are_taken_over_when_its_lease_lapses(bed: Bed) -> None:
    assert not bed.engine.single_process
    await bed.add(SAFE_CHAIN)
    bed.gates["two"] = asyncio.Event()
    started = await bed.workflows.start("chain", {}, "p1")
    await eventually(lambda: bed.calls["two"] == 1, what="two running")
    dead = bed.engine.name

    await bed.crash()  # another engine starts at once: the dead one's lease still holds
    survivor = bed.engine
    stored = await bed.store.execution(started.id)
    assert stored is not None and stored.owner == dead

    # Lease 2 s: then the survivor claims it, runs `two` again (safe) and goes on.
    await eventually(lambda: bed.calls["two"] == 2, timeout=10, what="two run again")
    bed.gates["two"].set()
    done = await bed.finished(started.id)
    assert (done.state, done.owner) == ("SUCCESS", survivor.name)
    assert (bed.calls["one"], bed.calls["two"], bed.calls["three"]) == (1, 2, 1)


async def test_a_live_engine_keeps_its_executions(bed: Bed) -> None:
    await bed.add(SAFE_CHAIN)
    bed.gates["two"] = asyncio.Event()
    started = await bed.workflows.start("chain", {}, "p1")
    await eventually(lambda: bed.calls["two"] == 1, what="two running")
    other = bed.new_engine()
    await other.start()
    # Longer than a lease (2 s): the first engine's renewals keep it.
    await asyncio.sleep(2.5)  # the lease's clock, not a synchronisation
    assert await other.take_over() == []
    assert started.id not in other.runs
    bed.gates["two"].set()
    done = await bed.finished(started.id)
    assert (done.state, done.owner) == ("SUCCESS", bed.engine.name)
    assert bed.calls["two"] == 1


async def test_another_process_asked_to_pause_resume_or_cancel_has_the_owner_do_it(
    bed: Bed,
) -> None:
    await bed.add(SAFE_CHAIN)
    bed.gates["two"] = asyncio.Event()
    started = await bed.workflows.start("chain", {}, "p1")
    await eventually(lambda: bed.calls["two"] == 1, what="two running")
    owner = bed.engine
    other = bed.new_engine()
    await other.start()

    await other.set_state(started.id, "PAUSED")  # returns once the owner has paused it
    paused = await bed.store.execution(started.id)
    assert paused is not None and (paused.state, paused.owner) == ("PAUSED", owner.name)
    assert owner.runs[started.id].execution.state == "PAUSED"
    await other.set_state(started.id, "RUNNING")
    bed.gates["two"].set()
    done = await bed.finished(started.id)
    assert (done.state, done.owner) == ("SUCCESS", owner.name)
    assert (bed.calls["two"], bed.calls["three"]) == (1, 1)

    bed.gates["two"] = asyncio.Event()
    again = await bed.workflows.start("chain", {}, "p1")
    await eventually(lambda: bed.calls["two"] == 2, what="two running again")
    await other.set_state(again.id, "CANCELLED", "no longer wanted")
    cancelled = await bed.store.execution(again.id)
    assert cancelled is not None
    assert (cancelled.state, cancelled.state_info) == ("CANCELLED", "no longer wanted")
    assert await bed.store.requests_for(owner.name) == []
