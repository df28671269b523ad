"""The heap keeper freezes what survives full collections and thaws it in time, so that
garbage frozen by the way is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from opendoctor.infra.heap import HeapKeeper


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process's own objects go back to the collector


def test_what_survives_a_full_collection_is_frozen_then_thawed_and_its_garbage_freed() -> None:
    keeper = HeapKeeper(thaw_quiet=1e9, thaw_anyway=1e9)
    gc.callbacks.append(keeper._noted)
    try:
        node = Node()
        gone = weakref.ref(node)
        assert keeper.tick() is None  # no full walk yet: nothing to do
        gc.collect()  # a full walk, as the collector makes on its own
        assert keeper.tick() == "froze" and gc.get_freeze_count() > 0
        assert keeper.tick() is None

        del node
        gc.collect()
        assert gone() is not None  # frozen: not walked, so its cycle is kept

        keeper.thaw_anyway = 0.0
        assert keeper.tick() == "thawed" and gc.get_freeze_count() == 0
        gc.collect()
        assert gone() is None
    finally:
        gc.callbacks.remove(keeper._noted)


def test_a_quiet_process_is_thawed_sooner_than_a_busy_one() -> None:
    keeper = HeapKeeper(thaw_quiet=10.0, thaw_anyway=100.0)
    start = keeper._cpu[0]
    assert keeper.tick(start + 5.0) is None  # quiet, but not for long enough
    assert keeper.tick(start + 11.0) == "thawed"  # quiet (no CPU spent in 6 s)
    assert keeper.thaws == 1
