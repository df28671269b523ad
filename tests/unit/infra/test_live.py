"""The hub of live events: in order, filtered by project and kind, bounded per subscriber
(a `gap` in place of what a slow one missed) and in subscribers, never in the way of
the publisher, and unsubscribed however a subscription ends."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from opendoctor.infra.live import GAP, Hub, HubClosed, HubFull, nowhere


def everything(project: str | None) -> bool:
    return True


async def test_events_come_in_order_with_growing_ids_and_a_time() -> None:
    hub = Hub()
    assert not hub.listening
    hub.publish("fault.opened", {"n": 0})  # nobody listens: dropped, no error
    sub = hub.subscribe(everything)
    assert hub.listening
    for n in range(3):
        hub.publish("graph.vertex", {"n": n}, "p1")
    got = [await sub.get() for _ in range(3)]
    assert [e.data["n"] for e in got if e is not None] == [0, 1, 2]
    ids = [e.id for e in got if e is not None]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert all(e is not None and e.time > 0 and e.project == "p1" for e in got)


async def test_a_project_sees_its_own_events_and_an_admin_everything() -> None:
    hub = Hub()
    admin = hub.subscribe(everything)
    a = hub.subscribe(lambda project: project == "a")
    hub.publish("graph.vertex", {"key": "host:c1"})  # the infrastructure's
    hub.publish("graph.vertex", {"key": "server:b1"}, "b")
    hub.publish("graph.vertex", {"key": "server:a1"}, "a")
    assert [e.data["key"] for e in admin.pending(10)] == ["host:c1", "server:b1", "server:a1"]
    assert [e.data["key"] for e in a.pending(10)] == ["server:a1"]


async def test_kinds_filter() -> None:
    hub = Hub()
    sub = hub.subscribe(everything, kinds=["fault.opened"])
    hub.publish("graph.vertex", {})
    hub.publish("fault.opened", {"id": "f1"})
    assert [(e.kind, e.data) for e in sub.pending(10)] == [("fault.opened", {"id": "f1"})]


async def test_a_subscriber_that_falls_behind_gets_one_gap_not_a_longer_queue() -> None:
    hub = Hub(queue_limit=3)
    slow = hub.subscribe(everything)
    fast = hub.subscribe(everything)
    seen: list[int] = []
    for n in range(10):
        hub.publish("graph.vertex", {"n": n})
        seen.extend(e.data["n"] for e in fast.pending(10))
        assert len(slow._queue) <= 3  # bounded, whatever the rate
    assert seen == list(range(10))  # the slow one never held the fast one back
    # Full at 3 events: the 4th replaces them with a gap, and so on. What is left is one
    # gap for all it missed, and what came after.
    got = slow.pending(10)
    assert [e.kind for e in got] == [GAP, "graph.vertex"]
    assert got[0].data == {"dropped": 9}
    assert got[1].data == {"n": 9}
    assert got[0].id < got[1].id  # ids keep growing through a gap
    assert slow.gaps == 4 and fast.gaps == 0
    hub.publish("graph.vertex", {"n": 10})
    assert [e.data for e in slow.pending(10)] == [{"n": 10}]  # caught up: no gap


async def test_subscribers_are_capped() -> None:
    hub = Hub(max_subscribers=2)
    first = hub.subscribe(everything)
    hub.subscribe(everything)
    with pytest.raises(HubFull, match="2 live subscribers already"):
        hub.subscribe(everything)
    first.close()
    hub.subscribe(everything)


async def test_closing_unsubscribes_and_ends_the_iteration() -> None:
    hub = Hub()
    sub = hub.subscribe(everything)
    hub.publish("fault.opened", {"id": "f1"})
    received = []

    async def consume() -> None:
        async for event in sub:
            received.append(event.data["id"])
            sub.close()  # ends the loop, and the subscription

    await asyncio.wait_for(consume(), 5)
    assert received == ["f1"]
    assert sub.closed and hub.subscribers == ()
    hub.publish("fault.opened", {"id": "f2"})  # nobody to tell
    assert await sub.get() is None
    with sub:  # closing again changes nothing
        pass


async def test_a_consumer_cancelled_while_waiting_unsubscribes() -> None:
    hub = Hub()
    sub = hub.subscribe(everything)
    waiting = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)  # one turn of the loop: it is waiting in `get` now
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert sub.closed and hub.subscribers == ()
    await asyncio.wait_for(sub.wait_closed(), 5)


async def test_a_waiting_consumer_is_woken_by_a_publish_even_from_another_thread() -> None:
    hub = Hub()
    sub = hub.subscribe(everything)
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    hub.publish("fault.opened", {"id": "here"})
    assert (await asyncio.wait_for(waiting, 5)) is not None

    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    thread = threading.Thread(target=hub.publish, args=("fault.opened", {"id": "there"}))
    thread.start()
    event = await asyncio.wait_for(waiting, 5)
    thread.join()
    assert event is not None and event.data["id"] == "there"


async def test_get_with_a_timeout_answers_none_and_stays_subscribed() -> None:
    hub = Hub()
    sub = hub.subscribe(everything)
    assert await sub.get(0.01) is None
    assert not sub.closed and hub.subscribers == (sub,)


async def test_one_consumer_at_a_time() -> None:
    sub = Hub().subscribe(everything)
    first = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one consumer"):
        await sub.get()
    sub.close()
    assert await first is None


async def test_a_failing_filter_costs_only_its_own_subscriber_the_event() -> None:
    hub = Hub()

    def broken(project: str | None) -> bool:
        raise ValueError("no")

    hub.subscribe(broken)
    good = hub.subscribe(everything)
    hub.publish("fault.opened", {"id": "f1"})  # does not raise
    assert [e.data for e in good.pending(5)] == [{"id": "f1"}]


async def test_closing_the_hub_ends_every_stream() -> None:
    hub = Hub()
    subs = [hub.subscribe(everything) for _ in range(3)]
    waiting = asyncio.create_task(subs[0].get())
    await asyncio.sleep(0)
    hub.close()
    assert await asyncio.wait_for(waiting, 5) is None
    assert all(s.closed for s in subs) and hub.subscribers == ()
    # None more: a server that stops waits for every stream to end.
    with pytest.raises(HubClosed, match="stopping"):
        hub.subscribe(everything)
    hub.publish("fault.opened", {})  # nobody is told, nothing fails


def test_an_events_data_is_one_line_of_json_made_once() -> None:
    hub = Hub()
    sub = hub.subscribe(everything)
    hub.publish("fault.opened", {"id": "f1", "odd": {1, 2}}, "p1")
    [event] = sub.pending(1)
    line = event.data_json()
    assert "\n" not in line and event.data_json() is line
    doc = json.loads(line)
    assert doc["id"] == "f1"
    assert isinstance(doc["odd"], str)  # not JSON: its text, not a failure
    whole = event.to_dict()
    assert whole["kind"] == "fault.opened" and whole["project"] == "p1"
    assert whole["id"] == event.id and whole["data"] == event.data


def test_nowhere_takes_what_a_hub_takes() -> None:
    nowhere("fault.opened", {"id": "f1"}, None)
    nowhere("fault.opened", {"id": "f1"})
