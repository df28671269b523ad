"""Partitions go back to their own replica when it returns (scaled-out bus).

Each replica of a role consumes its share of a topic's partitions and stands by for the
others: the partition queues are single-active-consumer, so when a replica dies the
broker at once feeds its partitions to a standby. Without more, they stay there: the
returning replica subscribes behind the standby, and RabbitMQ 3.x has no way to make a
later subscriber the active one. So the replicas say who is there:

* presence: every replica claims, for each of its own partitions it consumes, a claim
  named after the partition's queue (`core.ports.Presence`: a database lease that it
  renews every `ttl / 3` seconds and that expires `ttl` seconds after it stops). It
  claims only once it has subscribed, so a claim means "I am in the queue's consumer
  list", and only while its broker connection is up;
* hand-back: every replica watches the claims of the partitions it stands by for. When
  one gets a new holder (the owner came back, as a new process), it hands the partition
  back: messages not yet handled are left unacked, those being handled finish and are
  acked, and only then is the consumer's channel closed, which puts the unacked back
  in the queue in order: the broker never has a key's messages out at two replicas
  at once, and order holds. The broker then feeds
  the next subscriber; the replica subscribes again after `standby_after` seconds,
  behind the owner, to stand by as before.

Every standby of the partition hands back, active or not (nobody can tell which one
the broker feeds), so with three or more replicas the owner ends up first whatever the
order of their subscriptions. The standbys stay subscribed while the owner is there:
a crash is taken over by the broker at once, not after a lease has expired.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opendoctor.bus.keyorder import KeyOrder
from opendoctor.core.ports import Presence
from opendoctor.infra import metrics
from opendoctor.infra.amqp import Subscription

if TYPE_CHECKING:
    from opendoctor.bus.amqp import AmqpBus

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Lane:
    """One subscription to one partition. A lane handed back stays released: deliveries
    that reach it afterwards (already on their way) go back to the queue."""

    topic: str
    partition: int
    standby: bool
    subscription: Subscription | None = None
    released: bool = False
    order: KeyOrder = field(default_factory=KeyOrder)


class Rebalancer:
    """Claims this replica's partitions and hands others' back when their owner returns.

    A part of `AmqpBus`, apart for its size: it works on the bus's subscriptions."""

    def __init__(self, bus: AmqpBus, presence: Presence, ttl: float, name: str) -> None:
        self.bus = bus
        self.presence = presence
        self.ttl = ttl
        # A new holder per process: a restarted owner is seen as new, even when it comes
        # back before the claims of the process it replaces have expired.
        self.holder = f"{name} pid {os.getpid()} {uuid.uuid4().hex[:8]}"
        self._seen: dict[str, str | None] = {}
        self._claimed: set[str] = set()

    def claim_name(self, topic: str, partition: int) -> str:
        return f"bus:{self.bus.queue(topic, partition)}"

    async def round(self) -> None:
        """Renew this replica's claims, then hand back what has a new owner."""
        bus = self.bus
        own = {self.claim_name(t, p) for t, ps in bus.consuming.items() for p in ps}
        # Cut off from the broker, this replica is no owner to hand anything back to.
        if own and bus.broker.connected:
            self._claimed = await self.presence.claim(own, self.holder, self.ttl)
        watched = {
            self.claim_name(t, p): (t, p)
            for t, mine in bus._consumed.items()
            for p in range(bus.partitions)
            if p not in mine
        }
        holders = await self.presence.holders(watched)
        for name, (topic, partition) in sorted(watched.items()):
            now, before = holders.get(name), self._seen.get(name)
            self._seen[name] = now
            if now is not None and now != before and now != self.holder:
                await self.hand_back(topic, partition, now)

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception as exc:  # the database: claims expire, standbys keep serving
                log.warning("bus: presence not renewed", extra={"error": str(exc)})
            await asyncio.sleep(self.ttl / 3)

    async def hand_back(self, topic: str, partition: int, owner: str) -> bool:
        """Stop standing by for a partition whose own replica is back; subscribe again,
        behind it, after `standby_after` seconds. False if not subscribed to it here."""
        bus = self.bus
        lane = bus._lanes.get((topic, partition))
        if lane is None or not lane.standby or lane.subscription is None:
            return False
        del bus._lanes[(topic, partition)]
        lane.released = True
        # The messages being handled finish and are acked first; those waiting their
        # turn are left unacked, and closing the channel puts them back in the queue in
        # order: the broker moves on only once nothing of the partition is out here.
        await lane.order.idle()
        await lane.subscription.close()
        bus.standing_by.get(topic, set()).discard(partition)
        was_active = partition in bus.taken_over.get(topic, set())
        bus.taken_over.get(topic, set()).discard(partition)
        metrics.BUS_HAND_BACKS.labels(topic).inc()
        log.info(
            "bus: partition handed back to its own replica",
            extra={"topic": topic, "partition": partition, "owner": owner, "active": was_active},
        )
        if not bus._closed:
            again = self._resubscribe(topic, partition)
            bus._standbys.append(asyncio.create_task(again, name=f"bus:{topic}:standby"))
        return True

    async def _resubscribe(self, topic: str, partition: int) -> None:
        await asyncio.sleep(self.bus.standby_after or 0.0)
        await self.bus._start_consuming(topic, frozenset([partition]), standby=True)

    async def release(self) -> None:
        """A clean stop: the claims go at once, so a restart can take them at once."""
        if not self._claimed:
            return
        try:
            await self.presence.release(self._claimed, self.holder)
        except Exception as exc:
            log.warning("bus: presence not released", extra={"error": str(exc)})
        self._claimed = set()
