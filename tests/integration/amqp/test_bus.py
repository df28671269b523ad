"""The RabbitMQ bus: ordered per key, concurrent across keys, at least once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from opendoctor.bus.amqp import EVENT_CODEC, AmqpBus, BusError, partition_of
from opendoctor.bus.base import redelivered as again
from opendoctor.core.model import Event
from opendoctor.core.ports import Bus
from opendoctor.infra.amqp import Broker, Delivery
from tests.conftest import eventually
from tests.integration.amqp.conftest import Names

MakeBus = Callable[..., AmqpBus]


def event(host: str, seq: int) -> Event:
    return Event(
        type="compute.host.down",
        hostname=host,
        status="down",
        time=1700000000.0 + seq,
        details={"seq": seq, "hostname": host},
        trace={"T01": 1.5},
    )


def keys_on_distinct_partitions(n: int, partitions: int) -> list[str]:
    found: dict[int, str] = {}
    i = 0
    while len(found) < n:
        found.setdefault(partition_of(f"compute{i}", partitions), f"compute{i}")
        i += 1
    return list(found.values())


def test_the_event_codec_round_trips_an_event() -> None:
    e = event("compute1", 3)
    assert EVENT_CODEC.decode(EVENT_CODEC.encode(e)) == e
    with pytest.raises(TypeError):
        EVENT_CODEC.encode({"type": "not an event"})


def test_partitions_are_stable_and_checked() -> None:
    assert partition_of("compute1", 8) == partition_of("compute1", 8)
    assert len({partition_of(f"compute{i}", 8) for i in range(100)}) == 8
    with pytest.raises(ValueError, match="partition 8 does not exist"):
        AmqpBus("amqp://127.0.0.1/", partitions=8, consume=[0, 8])


async def test_events_of_one_host_are_handled_in_order_while_hosts_interleave(
    make_bus: MakeBus, names: Names
) -> None:
    partitions = 4
    bus = make_bus(names.bus_prefix(["events"], partitions), partitions=partitions)
    _: Bus = bus  # the protocol the service uses
    seen: dict[str, list[Event]] = {}

    async def handle(e: Event) -> None:
        seen.setdefault(e.hostname, []).append(e)

    bus.subscribe("events", handle)
    await bus.ready()
    hosts = [f"compute{i}" for i in range(8)]
    sent = {h: [event(h, seq) for seq in range(25)] for h in hosts}

    async def storm(host: str) -> None:
        for e in sent[host]:
            await bus.publish("events", e, key=host)

    await asyncio.gather(*(storm(h) for h in hosts))
    await bus.drain()
    # Every event arrived, decoded as it was sent (id, trace, details), in its host's order.
    assert seen == sent


async def test_hosts_on_different_partitions_are_handled_concurrently(
    make_bus: MakeBus, names: Names
) -> None:
    partitions = 4
    bus = make_bus(names.bus_prefix(["work"], partitions), partitions=partitions)
    first, second = keys_on_distinct_partitions(2, partitions)
    second_ran = asyncio.Event()
    done: list[str] = []

    async def handle(message: dict[str, Any]) -> None:
        if message["key"] == first:
            # Blocks until the other partition's message has been handled: with one
            # worker for everything this would never finish.
            await second_ran.wait()
        else:
            second_ran.set()
        done.append(message["key"])

    bus.subscribe("work", handle)
    await bus.ready()
    await bus.publish("work", {"key": first}, key=first)
    await bus.publish("work", {"key": second}, key=second)
    await asyncio.wait_for(bus.drain(), timeout=10)
    assert done == [second, first]


async def test_hosts_sharing_a_partition_run_side_by_side_each_in_order(
    make_bus: MakeBus, names: Names
) -> None:
    """One partition: the second host's messages (alone and in a batch) do not wait
    for the first host's, while the first host's later message waits for its first."""
    bus = make_bus(names.bus_prefix(["work"], 1), partitions=1)
    others_ran = asyncio.Event()
    done: list[tuple[str, int]] = []

    async def handle(message: dict[str, Any]) -> None:
        key, seq = message["key"], message["seq"]
        if (key, seq) == ("first", 0):
            # Blocks until the other host's messages were handled: with one message
            # of the partition at a time, this would never finish.
            await others_ran.wait()
        if key == "second" and seq == 1:
            others_ran.set()
        done.append((key, seq))

    bus.subscribe("work", handle)
    await bus.ready()
    await bus.publish("work", {"key": "first", "seq": 0}, key="first")
    await bus.publish("work", {"key": "first", "seq": 1}, key="first")
    await bus.publish("work", {"key": "second", "seq": 0}, key="second")
    batch = [("second", {"key": "second", "seq": 1}), ("third", {"key": "third", "seq": 0})]
    await bus.publish_many("work", batch)
    await asyncio.wait_for(bus.drain(), timeout=10)
    assert done == [("second", 0), ("second", 1), ("third", 0), ("first", 0), ("first", 1)]


async def test_a_failed_handler_gets_the_message_again_and_order_holds(
    make_bus: MakeBus, names: Names
) -> None:
    bus = make_bus(names.bus_prefix(["events"], 2), partitions=2)
    calls: list[tuple[str, int]] = []
    failed_once: set[int] = set()

    async def handle(e: Event) -> None:
        seq = e.details["seq"]
        calls.append((e.hostname, seq))
        if seq == 1 and seq not in failed_once:
            failed_once.add(seq)
            raise RuntimeError("the store is down for a moment")

    bus.subscribe("events", handle)
    await bus.ready()
    for seq in range(4):
        await bus.publish("events", event("compute1", seq), key="compute1")
    await asyncio.wait_for(bus.drain(), timeout=10)
    # The failed message came again before the next one of its host.
    assert calls == [("compute1", s) for s in (0, 1, 1, 2, 3)]


async def test_a_message_that_keeps_failing_is_dead_lettered_and_the_host_moves_on(
    make_bus: MakeBus, names: Names, admin: Broker
) -> None:
    prefix = names.bus_prefix(["events"], 1)
    bus = make_bus(prefix, partitions=1, max_attempts=3)
    calls: list[int] = []

    async def handle(e: Event) -> None:
        calls.append(e.details["seq"])
        if e.details["seq"] == 0:
            raise ValueError("poison")

    bus.subscribe("events", handle)
    await bus.ready()
    await bus.publish("events", event("compute1", 0), key="compute1")
    await bus.publish("events", event("compute1", 1), key="compute1")
    await asyncio.wait_for(bus.drain(), timeout=10)
    assert calls == [0, 0, 0, 1]

    dead: asyncio.Queue[Delivery] = asyncio.Queue()

    async def keep(d: Delivery) -> None:
        await dead.put(d)
        await d.ack()

    await admin.consume(bus.dead_letters("events"), keep)
    got = await asyncio.wait_for(dead.get(), timeout=10)
    assert EVENT_CODEC.decode(got.body).details["seq"] == 0
    assert got.header("x-opendoctor-key") == "compute1"


async def test_messages_survive_a_subscriber_that_leaves_without_acking(
    make_bus: MakeBus, names: Names
) -> None:
    prefix = names.bus_prefix(["events"], 1)
    first = make_bus(prefix, partitions=1)
    second = make_bus(prefix, partitions=1)
    publisher = make_bus(prefix, partitions=1)
    started = asyncio.Event()
    never = asyncio.Event()
    by_first: list[int] = []
    by_second: list[int] = []

    async def stuck(e: Event) -> None:
        started.set()
        await never.wait()  # the process dies before it finishes
        by_first.append(e.details["seq"])

    async def handle(e: Event) -> None:
        by_second.append(e.details["seq"])

    first.subscribe("events", stuck)
    await first.ready()
    second.subscribe("events", handle)  # a replica on standby for the same partition
    await second.ready()
    for seq in range(3):
        await publisher.publish("events", event("compute1", seq), key="compute1")
    await asyncio.wait_for(started.wait(), timeout=10)
    await first.close()  # its connection goes; message 0 was never acked

    await eventually(lambda: by_second == [0, 1, 2], what="the other subscriber")
    assert by_first == []


async def test_messages_published_before_anyone_subscribes_wait_in_their_queue(
    make_bus: MakeBus, names: Names
) -> None:
    prefix = names.bus_prefix(["events"], 2)
    publisher = make_bus(prefix, partitions=2)
    await publisher.publish("events", event("compute1", 0), key="compute1")
    await publisher.drain()  # nothing consumed here: only confirmed by the broker
    subscriber = make_bus(prefix, partitions=2)
    got: list[int] = []

    async def handle(e: Event) -> None:
        got.append(e.details["seq"])

    subscriber.subscribe("events", handle)
    await eventually(lambda: got == [0], what="the waiting message")


async def test_publish_fails_clearly_when_the_broker_cannot_be_reached() -> None:
    bus = AmqpBus("amqp://guest:guest@127.0.0.1:1/", publish_timeout=0.3, timeout=0.5)
    try:
        with pytest.raises(BusError, match=r"could not publish to 'events'.*127\.0\.0\.1:1"):
            await bus.publish("events", event("compute1", 0), key="compute1")
    finally:
        await bus.close()


async def test_an_undecodable_message_is_dead_lettered_without_reaching_the_handler(
    make_bus: MakeBus, names: Names, admin: Broker
) -> None:
    bus = make_bus(names.bus_prefix(["events"], 1), partitions=1)
    got: list[int] = []

    async def handle(e: Event) -> None:
        got.append(e.details["seq"])

    bus.subscribe("events", handle)
    await bus.ready()
    await admin.publish(bus.exchange("events"), "0", b"{not json", message_id="garbage")
    await bus.publish("events", event("compute1", 1), key="compute1")
    await asyncio.wait_for(bus.drain(), timeout=10)
    assert got == [1]
    dead: asyncio.Queue[Delivery] = asyncio.Queue()

    async def keep(d: Delivery) -> None:
        await dead.put(d)
        await d.ack()

    await admin.consume(bus.dead_letters("events"), keep)
    assert (await asyncio.wait_for(dead.get(), timeout=10)).body == b"{not json"


async def test_publish_many_sends_one_batch_per_partition_in_order_per_host(
    make_bus: MakeBus, names: Names, admin: Broker
) -> None:
    partitions = 2
    prefix = names.bus_prefix(["events"], partitions)
    publisher = make_bus(prefix, partitions=partitions)
    hosts = [*keys_on_distinct_partitions(partitions, partitions), "compute-x", "compute-y"]
    items = [(h, event(h, seq)) for seq in range(30) for h in hosts]  # hosts interleaved
    await publisher.publish_many("events", items)

    # On the broker: a batch per partition holding its hosts' events, in publishing order.
    arrived: asyncio.Queue[Delivery] = asyncio.Queue()

    async def keep(d: Delivery) -> None:
        await arrived.put(d)
        await d.ack()

    got: dict[str, list[int]] = {}
    for p in range(partitions):
        await admin.consume(publisher.queue("events", p), keep)
    for _ in range(partitions):
        d = await asyncio.wait_for(arrived.get(), timeout=10)
        batch = [EVENT_CODEC.from_json(v) for v in orjson.loads(d.body)]
        assert d.headers["x-opendoctor-batch"] == len(batch)
        assert {partition_of(e.hostname, partitions) for e in batch} == {int(d.routing_key)}
        for e in batch:
            got.setdefault(e.hostname, []).append(e.details["seq"])
    assert arrived.empty()
    assert got == {h: list(range(30)) for h in hosts}


async def test_a_batch_that_fails_midway_comes_again_whole_and_order_holds(
    make_bus: MakeBus, names: Names
) -> None:
    bus = make_bus(names.bus_prefix(["events"], 1), partitions=1)
    calls: list[int] = []
    redelivered: list[bool] = []
    failed = False

    async def handle(e: Event) -> None:
        nonlocal failed
        calls.append(e.details["seq"])
        redelivered.append(again())
        if e.details["seq"] == 2 and not failed:
            failed = True
            raise RuntimeError("the store is down for a moment")

    bus.subscribe("events", handle)
    await bus.ready()
    await bus.publish_many("events", [("compute1", event("compute1", s)) for s in range(4)])
    await bus.publish("events", event("compute1", 4), key="compute1")
    await asyncio.wait_for(bus.drain(), timeout=10)
    # Its first messages are handled again (handlers are told so), nothing overtakes it.
    assert calls == [0, 1, 2, 0, 1, 2, 3, 4]
    assert redelivered == [False, False, False, True, True, True, True, False]
