"""Partitions go back to their own replica when it returns (`bus.handback`), on the real
RabbitMQ and PostgreSQL: replicas are `AmqpBus` instances of one process, each with its
share of the partitions, standing by for the others, their presence in the database.

A replica goes away (its connection closes: the broker feeds its partition to a standby),
messages keep coming, and a new replica with the same share starts while they do. The
partition must come back to it, and across the hand-over every message is handled once,
in the order it was published.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from opendoctor.bus.amqp import AmqpBus, partition_of
from opendoctor.core.model import Event
from opendoctor.store.db import Database
from opendoctor.store.leases import LeasePresence, LeaseStore
from tests import pg
from tests.conftest import eventually
from tests.integration.amqp.conftest import Names

MakeBus = Callable[..., AmqpBus]


def key_on(partition: int, partitions: int) -> str:
    return next(k for i in range(1000) if partition_of(k := f"compute{i}", partitions) == partition)


@pytest.fixture
async def presence(pg_databases: pg.Databases) -> AsyncIterator[LeasePresence]:
    name = await pg_databases.take()
    db = Database(pg.url_for(name))
    await db.migrate()
    try:
        yield LeasePresence(LeaseStore(db))
    finally:
        await db.close()
        await pg_databases.give_back(name)


@dataclass
class Handled:
    """Every handling of every message that ran to its end, by whom, in order."""

    log: list[tuple[str, int]] = field(default_factory=list)

    def handler(self, replica: str, hold: float = 0.0) -> Callable[[Event], object]:
        async def handle(e: Event) -> None:
            # Long enough that a hand-back finds a message being handled.
            await asyncio.sleep(hold)
            self.log.append((replica, e.details["seq"]))

        return handle

    def seqs(self) -> list[int]:
        return [seq for _, seq in self.log]

    def by(self, replica: str) -> list[int]:
        return [seq for who, seq in self.log if who == replica]


def event(host: str, seq: int) -> Event:
    return Event(
        type="compute.host.down",
        hostname=host,
        status="down",
        time=time.time(),
        details={"seq": seq, "hostname": host},
    )


@pytest.mark.parametrize("replicas", [2, 3])
async def test_a_returning_replica_gets_its_partition_back_with_nothing_lost_or_twice(
    replicas: int, make_bus: MakeBus, names: Names, presence: LeasePresence
) -> None:
    partitions = replicas
    prefix = names.bus_prefix(["events"], partitions)
    handled = Handled()

    def replica(name: str, i: int) -> AmqpBus:
        bus = make_bus(
            prefix,
            partitions=partitions,
            consume=[i],
            standby_after=0.2,
            presence=presence,
            presence_ttl=0.6,
            name=name,
        )
        bus.subscribe("events", handled.handler(name, hold=0.01))
        return bus

    others = [replica(f"replica-{i}", i) for i in range(1, replicas)]
    first = replica("replica-0", 0)
    everyone = [first, *others]

    def standing(bus: AmqpBus) -> bool:
        return len(bus.consuming.get("events", ())) + len(bus.standing_by.get("events", ())) == (
            partitions
        )

    await eventually(lambda: all(standing(b) for b in everyone), what="everyone standing by")
    publisher = make_bus(prefix, partitions=partitions)
    host = key_on(0, partitions)
    seq = 0

    async def send(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            await publisher.publish("events", event(host, seq), key=host)
            seq += 1

    await send(5)
    await eventually(lambda: handled.by("replica-0") == list(range(5)), what="replica-0's own")

    # replica-0 goes; a standby takes partition 0 over (the broker's doing).
    await first.close()
    await send(5)
    await eventually(lambda: handled.seqs() == list(range(10)), what="a standby takes over")
    taker = next(b for b in others if b.taken_over.get("events") == {0})
    assert handled.by("replica-0") == list(range(5))

    # Its successor starts while the messages keep coming, a few handled every moment.
    storm = asyncio.create_task(storm_of(send, 60))
    back = replica("replica-0", 0)
    await eventually(lambda: standing(back), what="the returning replica subscribed")
    await eventually(lambda: not taker.taken_over.get("events"), what="partition 0 handed back")
    await storm
    await send(5)
    total = seq
    await eventually(lambda: len(handled.log) >= total, timeout=20, what="every message handled")

    # Nothing lost, nothing twice, in the published order across the three holders.
    assert handled.seqs() == list(range(total))
    # The partition is the returning replica's again: the last messages were its own.
    mine = handled.by("replica-0")
    assert mine[-5:] == list(range(total - 5, total)), handled.log[-10:]
    # Its predecessor's partitions stayed with their owners throughout.
    assert all(b.consuming["events"] == {i} for i, b in enumerate(others, start=1))
    # The standbys stand by again, behind it.
    await eventually(lambda: all(standing(b) for b in others), what="standing by again")


async def storm_of(send: Callable[[int], object], n: int) -> None:
    """`n` messages, a few at a time, over a second or so: the hand-over falls among them."""
    for _ in range(n // 3):
        await send(3)  # type: ignore[misc]
        await asyncio.sleep(0.02)
