"""Damping on its own: how long a fault is held, and what a resource's past adds to it."""

from __future__ import annotations

import asyncio

from opendoctor.core.faults import Fault
from opendoctor.inspector.damping import Damping


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def fault(host: str = "compute1", flaps: int = 0) -> Fault:
    return Fault(id=f"f-{host}", type="compute.host.down", hostname=host, started=0, flaps=flaps)


def test_each_flap_doubles_the_hold_down_up_to_the_ceiling() -> None:
    damping = Damping(10.0, 300.0)
    assert [damping.delay(fault(flaps=n)) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert Damping(0.0, 300.0).delay(fault(flaps=3)) == 0.0


def test_a_resource_down_again_soon_after_its_fault_cleared_starts_where_it_left_off() -> None:
    clock = Clock()
    damping = Damping(10.0, 300.0, clock)
    damping.cleared(fault("compute1", flaps=2))
    clock.now += 299
    again = fault("compute1")
    damping.opened(again)
    assert again.flaps == 3 and damping.delay(again) == 80

    # Remembered once: the fault after that starts from its own count.
    other = fault("compute1")
    damping.opened(other)
    assert other.flaps == 0

    # Past the ceiling, the old fault is forgotten.
    damping.cleared(fault("compute2", flaps=4))
    clock.now += 300
    late = fault("compute2")
    damping.opened(late)
    assert late.flaps == 0


def test_without_damping_nothing_is_remembered() -> None:
    damping = Damping(0.0, 300.0)
    damping.cleared(fault(flaps=5))
    again = fault()
    damping.opened(again)
    assert again.flaps == 0


async def test_down_again_ends_the_hold_and_the_clearance_never_runs() -> None:
    damping = Damping(10.0, 300.0)
    held = fault()
    cleared: list[str] = []

    async def clear() -> None:
        cleared.append(held.id)

    damping.hold(held, 60.0, clear)
    assert damping.holding(held.key) and held.held_until is not None
    await damping.settle(held.key, down=False)  # another `up`: still held
    assert damping.holding(held.key)
    await damping.settle(held.key, down=True)
    assert not damping.holding(held.key)
    await damping.close()
    assert cleared == []


async def test_an_event_during_a_clearance_waits_for_it() -> None:
    damping = Damping(10.0, 300.0)
    held = fault()
    started, release = asyncio.Event(), asyncio.Event()
    cleared: list[str] = []

    async def clear() -> None:
        started.set()
        await release.wait()
        cleared.append(held.id)

    damping.hold(held, 0.0, clear)
    await started.wait()
    waiting = asyncio.create_task(damping.settle(held.key, down=True))
    # One turn of the loop (not a wait for time): the task runs its first step, and one
    # that did not wait for the clearance would be done after it.
    await asyncio.sleep(0)
    assert not waiting.done()
    release.set()
    await waiting
    assert cleared == [held.id] and not damping.holding(held.key)
