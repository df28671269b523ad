"""Order per key within a partition: a message waits only for earlier ones of its keys."""

from __future__ import annotations

import asyncio

from opendoctor.bus.keyorder import KeyOrder


async def test_a_message_waits_for_earlier_ones_of_its_keys_only() -> None:
    order = KeyOrder()
    a1 = order.take(["a"])
    b1 = order.take(["b"])
    a2 = order.take(["a"])
    ab = order.take(["a", "b"])
    await asyncio.wait_for(a1.ready(), 1)
    await asyncio.wait_for(b1.ready(), 1)  # another key: not behind a1
    waiting = asyncio.ensure_future(a2.ready())
    both = asyncio.ensure_future(ab.ready())
    await asyncio.sleep(0)
    assert not waiting.done()
    a1.leave()
    await asyncio.wait_for(waiting, 1)
    assert not both.done()  # still behind b1 and a2
    b1.leave()
    a2.leave()
    await asyncio.wait_for(both, 1)
    ab.leave()
    # Nothing is held any more: a new message of either key goes at once.
    await asyncio.wait_for(order.take(["a"]).ready(), 1)


async def test_a_message_of_unknown_keys_waits_for_all_and_all_wait_for_it() -> None:
    order = KeyOrder()
    a = order.take(["a"])
    unknown = order.take(None)
    b = order.take(["b"])
    waiting = asyncio.ensure_future(unknown.ready())
    after = asyncio.ensure_future(b.ready())
    await asyncio.sleep(0)
    assert not waiting.done()
    a.leave()
    await asyncio.wait_for(waiting, 1)
    assert not after.done()
    unknown.leave()
    await asyncio.wait_for(after, 1)


async def test_idle_waits_for_the_messages_being_handled_not_the_waiting_ones() -> None:
    order = KeyOrder()
    first = order.take(["a"])
    order.take(["a"])  # waiting its turn: not counted
    await first.ready()
    with order.running():
        idle = asyncio.ensure_future(order.idle())
        await asyncio.sleep(0)
        assert not idle.done()
    await asyncio.wait_for(idle, 1)
