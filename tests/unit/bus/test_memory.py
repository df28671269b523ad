"""The in-process bus: per-key order, a bounded pool of workers, nothing lost."""

from __future__ import annotations

import asyncio
import random

import pytest

from opendoctor.bus.memory import InProcessBus


async def test_each_key_in_order_never_more_workers_than_allowed() -> None:
    bus = InProcessBus(workers=3)
    seen: dict[str, list[int]] = {}
    running = 0
    most = 0
    rng = random.Random(7)

    async def handler(message: tuple[str, int]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(rng.randrange(4)):  # handlers suspend a varying number of times
            await asyncio.sleep(0)
        key, n = message
        seen.setdefault(key, []).append(n)
        running -= 1

    bus.subscribe("events", handler)
    keys = [f"compute{i}" for i in range(10)]
    for n in range(30):
        for key in keys:
            await bus.publish("events", (key, n), key=key)
    await bus.drain()

    assert seen == {key: list(range(30)) for key in keys}
    assert most == 3


async def test_a_busy_handler_holds_back_its_key_only() -> None:
    bus = InProcessBus(workers=2)
    release, others_done = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def handler(message: str) -> None:
        if message == "compute1-a":
            await release.wait()
        done.append(message)
        if message == "compute2-4":
            others_done.set()

    bus.subscribe("events", handler)
    await bus.publish("events", "compute1-a", key="compute1")
    await bus.publish("events", "compute1-b", key="compute1")
    for i in range(5):
        await bus.publish("events", f"compute2-{i}", key="compute2")
    # The other worker goes through compute2's messages while compute1's first one waits.
    await asyncio.wait_for(others_done.wait(), 5)
    assert done == [f"compute2-{i}" for i in range(5)]
    release.set()
    await bus.drain()
    assert done[5:] == ["compute1-a", "compute1-b"]


async def test_a_failing_handler_does_not_stop_its_key() -> None:
    bus = InProcessBus(workers=1)
    done: list[int] = []

    async def handler(n: int) -> None:
        if n == 1:
            raise RuntimeError("bad message")
        done.append(n)

    bus.subscribe("events", handler)
    for n in range(4):
        await bus.publish("events", n, key="compute1")
    await bus.drain()
    assert done == [0, 2, 3]


async def test_messages_published_after_the_workers_left_are_handled() -> None:
    bus = InProcessBus(workers=1)
    done: list[int] = []

    async def handler(n: int) -> None:
        done.append(n)

    bus.subscribe("events", handler)
    for n in range(3):
        await bus.publish("events", n, key=f"compute{n}")
        await bus.drain()  # the worker has nothing left: the next publish needs a new one
    assert done == [0, 1, 2]


async def test_topics_have_pools_of_their_own() -> None:
    bus = InProcessBus(workers=1)
    release, noted = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def blocked(message: str) -> None:
        await release.wait()
        done.append(message)

    async def quick(message: str) -> None:
        done.append(message)
        noted.set()

    bus.subscribe("events", blocked)
    bus.subscribe("notifications", quick)
    await bus.publish("events", "event", key="compute1")
    await bus.publish("notifications", "note", key="compute1")
    await asyncio.wait_for(noted.wait(), 5)
    assert done == ["note"]
    release.set()
    await bus.drain()
    assert done == ["note", "event"]


async def test_close_cancels_the_handlers_under_way() -> None:
    bus = InProcessBus(workers=2)
    started = asyncio.Event()

    async def forever(_: object) -> None:
        started.set()
        await asyncio.Event().wait()

    bus.subscribe("events", forever)
    await bus.publish("events", 1, key="compute1")
    await started.wait()
    await bus.close()


def test_at_least_one_worker() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InProcessBus(workers=0)
