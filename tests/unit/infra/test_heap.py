"""The heap keeper freezes what survives full collections and thaws it in time, so that
garbage frozen by the way is still collected."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from opendoctor.infra.heap import FULL_AFTER, HeapKeeper


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process's own objects go back to the collector


def busy_tick(keeper: HeapKeeper) -> str | None:
    """A look a moment after the last one: the process counts as busy."""
    return keeper.tick(keeper._cpu[0] + 1e-6)


def test_what_survives_a_full_collection_is_frozen_then_thawed_and_its_garbage_freed() -> None:
    keeper = HeapKeeper(thaw_quiet=1e9, thaw_anyway=1e9)
    gc.callbacks.append(keeper._noted)
    try:
        node = Node()
        gone = weakref.ref(node)
        assert busy_tick(keeper) is None  # no full walk yet: nothing to do
        gc.collect()  # a full walk, as the collector makes on its own
        assert busy_tick(keeper) == "froze" and gc.get_freeze_count() > 0
        assert busy_tick(keeper) is None

        del node
        gc.collect()
        assert gone() is not None  # frozen: not walked, so its cycle is kept

        keeper.thaw_anyway = 0.0
        assert busy_tick(keeper) == "thawed"
        assert gone() is None  # the thaw's own walk freed it
        assert gc.get_freeze_count() > 0  # and froze what lives again
    finally:
        gc.callbacks.remove(keeper._noted)


def test_a_quiet_process_is_thawed_sooner_than_a_busy_one() -> None:
    keeper = HeapKeeper(thaw_quiet=10.0, thaw_anyway=100.0)
    gc.collect()  # nothing in the oldest generation to settle: only the thaw is due
    start = keeper._cpu[0]
    assert keeper.tick(start + 5.0) is None  # quiet, but not for long enough
    assert keeper.tick(start + 11.0) == "thawed"  # quiet (no CPU spent in 6 s)
    assert keeper.thaws == 1
    assert gc.get_freeze_count() > 0  # collected at once, and what lives frozen again


def busy_for(seconds: float) -> None:
    """Spend this much CPU time."""
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


def test_what_reached_the_oldest_generation_is_settled_when_quiet_not_when_busy() -> None:
    """Between storms the keeper makes the full walk itself and freezes what lives, so
    a storm starts with nothing in the oldest generation for the collector to walk."""
    keeper = HeapKeeper(thaw_quiet=1e9, thaw_anyway=1e9)
    gc.collect()
    gc.collect(1)  # a middle-generation collection: its survivors are in the oldest now
    assert gc.get_count()[2] > 0
    then = keeper._cpu[0]
    busy_for(0.05)
    assert keeper.tick(then + 0.01) is None  # five times a core: not now
    frozen = gc.get_freeze_count()
    assert keeper.tick(keeper._cpu[0] + 10.0) == "settled"
    assert gc.get_count()[2] == 0 and gc.get_freeze_count() > frozen
    assert keeper.tick(keeper._cpu[0] + 10.0) is None  # nothing new since


def test_while_running_a_full_walk_waits_for_more_collections_and_stop_restores() -> None:
    before = gc.get_threshold()
    keeper = HeapKeeper()

    async def run() -> None:
        keeper.start()
        assert gc.get_threshold() == (before[0], before[1], FULL_AFTER)
        await keeper.stop()

    asyncio.run(run())
    assert gc.get_threshold() == before
