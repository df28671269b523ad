"""The bus of scaled-out mode, on RabbitMQ: durable partition queues, ordered per key.

Layout, for a topic T and a prefix P (all durable, declared by whoever uses T first):

* a direct exchange `P.T`;
* `partitions` queues `P.T.0` … `P.T.{n-1}`, each bound with its index as the key; a
  message goes to partition `crc32(key) % partitions`, so the messages of one key (a
  host) always share a queue;
* a dead-letter queue `P.T.dead` for messages that failed `max_attempts` times or
  could not be decoded.

A subscriber consumes every partition (or the ones it is given, and with
`standby_after` the others too, as a standby), each with a prefetch of `workers ÷
partitions`. Within a partition, a message waits only for the earlier ones that share
a key with it (`bus.keyorder`: the keys travel in a header), so each key's messages
are handled one at a time, in order, and different keys run concurrently. The
partition queues are "single active consumer"
queues: when several replicas subscribe to the same partition, the broker feeds one
of them and fails over to the next when it goes away, so order holds across replicas.
With a `presence`, a replica that comes back gets its partitions back (`bus.handback`).

A message is acked after every handler of the topic returned. A handler that raises
makes the message wait `retry_delay` seconds (its keys wait with it: order first) and
be handled again; after `max_attempts` failed attempts in this process it is
dead-lettered. Messages carry a `message_id`; handlers
must be idempotent, since a message whose ack was lost (a broker restart) comes again.
A handler learns from `bus.base.redelivered()` whether the broker delivered the message
before (or it failed here before), to check what was already done only then.

`publish` returns once the broker confirmed the message (persistent, in a durable
queue). While the broker is away it keeps trying, up to `publish_timeout` seconds.

`publish_many` puts the messages bound for one partition in one AMQP message, a batch
(header `x-opendoctor-batch`: their count; `x-opendoctor-keys`: their keys; the body a
JSON array of them, in publishing order). The subscriber hands them to the handlers in
order (one by one, or all at once to a handler of `subscribe_many`), and acks the
batch after the last: a request of a hundred events costs a broker round trip per
partition, not per event. A batch that
fails is delivered again whole, so its first messages are handled twice, which handlers
allow already (a lost ack does the same).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from opendoctor.bus.base import handling
from opendoctor.bus.codecs import CODECS, Codec, JsonCodec
from opendoctor.bus.codecs import EVENT_CODEC as EVENT_CODEC
from opendoctor.bus.handback import Lane, Rebalancer
from opendoctor.core.ports import BatchHandler, Handler, Presence
from opendoctor.infra.amqp import (
    AmqpError,
    Broker,
    BrokerUrl,
    Delivery,
    DeliveryHandler,
)

log = logging.getLogger(__name__)


class BusError(Exception):
    """A message could not be handed to the broker."""


# The header of a batch (`publish_many`): how many messages its body's array holds.
BATCH = "x-opendoctor-batch"
# The key of a message published alone; the keys of a batch's messages (a JSON array).
KEY = "x-opendoctor-key"
KEYS = "x-opendoctor-keys"
MAX_BATCH = 500


def _message_id(delivery: Delivery) -> str:
    # Ours always carry one; a message from elsewhere is known by its body.
    return delivery.message_id or f"crc32:{zlib.crc32(delivery.body)}"


def _keys(delivery: Delivery) -> list[str] | None:
    """The keys of a message's events (None: not said, so it waits for all before it)."""
    raw = delivery.headers.get(KEYS)
    if raw is None:
        key = delivery.headers.get(KEY)
        if isinstance(key, bytes):
            key = key.decode(errors="replace")
        return [key] if isinstance(key, str) else None
    try:
        keys = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
        return keys
    return None


def partition_of(key: str, partitions: int) -> int:
    """Stable across processes and restarts (unlike `hash`)."""
    return zlib.crc32(key.encode()) % partitions


# --- the bus ---------------------------------------------------------------------------------


class AmqpBus:
    def __init__(
        self,
        url: str | BrokerUrl,
        *,
        prefix: str = "opendoctor",
        partitions: int = 8,
        consume: Iterable[int] | None = None,
        retry_delay: float = 1.0,
        max_attempts: int = 10,
        publish_timeout: float = 30.0,
        timeout: float = 5.0,
        reconnect_interval: float = 1.0,
        standby_after: float | None = None,
        presence: Presence | None = None,
        presence_ttl: float = 3.0,
        codecs: dict[str, Codec] | None = None,
        name: str = "opendoctor-bus",
        workers: int = 128,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.partitions = partitions
        # Messages out at once per partition: `workers` per topic, spread over them.
        self.prefetch = -(-workers // partitions)
        self.prefix = prefix
        self.consume = self._check_partitions(consume)
        self.standby_after = standby_after
        self.retry_delay = retry_delay
        self.max_attempts = max_attempts
        self.publish_timeout = publish_timeout
        self.codecs: dict[str, Codec] = {**CODECS, **(codecs or {})}
        self.broker = Broker(url, name=name, timeout=timeout, reconnect_interval=reconnect_interval)
        self._handlers: dict[str, list[BatchHandler]] = {}
        self._consumed: dict[str, frozenset[int]] = {}
        self._topics: dict[str, asyncio.Task[None]] = {}
        self._setups: list[asyncio.Task[None]] = []
        self._standbys: list[asyncio.Task[None]] = []
        # Partitions subscribed to, per topic: this replica's own, and those it stands
        # by for (the broker feeds it those only when their first consumer is gone).
        self.consuming: dict[str, set[int]] = {}
        self.standing_by: dict[str, set[int]] = {}
        # Partitions stood by for whose messages the broker fed here: their own replica
        # was gone (until they are handed back to it).
        self.taken_over: dict[str, set[int]] = {}
        self._lanes: dict[tuple[str, int], Lane] = {}
        self._rebalancer: Rebalancer | None = None
        if presence is not None and standby_after is not None and consume is not None:
            self._rebalancer = Rebalancer(self, presence, presence_ttl, name)
        self._attempts: dict[str, int] = {}
        self._running: set[asyncio.Task[Any]] = set()
        # Messages published here, bound for a partition consumed here, not yet handled.
        self._outstanding: set[str] = set()
        self._progress = asyncio.Event()
        self._closed = False

    def _check_partitions(self, chosen: Iterable[int] | None) -> frozenset[int]:
        if chosen is None:
            return frozenset(range(self.partitions))
        picked = frozenset(chosen)
        wrong = sorted(p for p in picked if not 0 <= p < self.partitions)
        if wrong:
            raise ValueError(f"partition {wrong[0]} does not exist (0 … {self.partitions - 1})")
        return picked

    def codec(self, topic: str) -> Codec:
        return self.codecs.get(topic) or JsonCodec()

    def exchange(self, topic: str) -> str:
        return f"{self.prefix}.{topic}"

    def queue(self, topic: str, partition: int) -> str:
        return f"{self.prefix}.{topic}.{partition}"

    def dead_letters(self, topic: str) -> str:
        return f"{self.prefix}.{topic}.dead"

    # -- set-up --

    async def connect(self) -> None:
        """Connect now (at start-up), rather than on first use; raises `AmqpError`."""
        await self.broker.connect()

    async def _declare(self, topic: str) -> None:
        exchange, dead = self.exchange(topic), self.dead_letters(topic)
        await self.broker.declare_exchange(exchange, "direct")
        await self.broker.declare_queue(dead)
        arguments = {
            # One consumer at a time per partition, whatever the number of replicas.
            "x-single-active-consumer": True,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead,
        }
        for i in range(self.partitions):
            bind = [(exchange, str(i))]
            await self.broker.declare_queue(self.queue(topic, i), arguments=arguments, bind=bind)

    async def _topic(self, topic: str) -> None:
        """Declare a topic's exchange and queues once per process (whoever comes first)."""
        task = self._topics.get(topic)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._topics[topic] = asyncio.create_task(self._declare(topic))
        await asyncio.shield(task)

    def subscribe(
        self, topic: str, handler: Handler, *, partitions: Iterable[int] | None = None
    ) -> None:
        """Handle `topic`'s messages of the given partitions (default: the bus's `consume`).

        Consuming starts in the background; `ready()` (or `drain()`) waits for it.
        """

        async def each(messages: Sequence[Any]) -> None:
            for message in messages:
                await handler(message)

        self.subscribe_many(topic, each, partitions=partitions)

    def subscribe_many(
        self, topic: str, handler: BatchHandler, *, partitions: Iterable[int] | None = None
    ) -> None:
        """As `subscribe`, the handler given a batch's messages at once (one, for a
        message published alone)."""
        chosen = self.consume if partitions is None else self._check_partitions(partitions)
        known = self._consumed.get(topic)
        if known is not None:
            if known != chosen:
                raise ValueError(f"topic {topic!r} is already consumed on other partitions")
            self._handlers[topic].append(handler)
            return
        self._handlers[topic] = [handler]
        self._consumed[topic] = chosen
        task = asyncio.create_task(self._start_consuming(topic, chosen), name=f"bus:{topic}")
        self._setups.append(task)
        rest = frozenset(range(self.partitions)) - chosen
        if rest and self.standby_after is not None:
            standby = self._stand_by(topic, task, rest)
            self._standbys.append(asyncio.create_task(standby, name=f"bus:{topic}:standby"))
        if self._rebalancer is not None and len(self._consumed) == 1:
            rebalance = self._rebalancer.run()
            self._standbys.append(asyncio.create_task(rebalance, name="bus:rebalance"))

    async def _stand_by(self, topic: str, first: asyncio.Task[None], rest: frozenset[int]) -> None:
        """Subscribe to the partitions other replicas consume, once this one's are taken.

        The queues are single-active-consumer: the broker keeps feeding whoever came
        first and switches to us only when it goes away. The wait lets replicas started
        together each come first on their own partitions, so they share the work.
        """
        assert self.standby_after is not None
        await asyncio.gather(first, asyncio.sleep(self.standby_after))
        await self._start_consuming(topic, rest, standby=True)

    async def _start_consuming(
        self, topic: str, partitions: frozenset[int], standby: bool = False
    ) -> None:
        todo = sorted(partitions)
        delay = 0.2
        while todo:
            try:
                await self._topic(topic)
                while todo:
                    i = todo[0]
                    lane = Lane(topic, i, standby)
                    handler = self._on_delivery(lane)
                    queue = self.queue(topic, i)
                    lane.subscription = await self.broker.consume(
                        queue, handler, prefetch=self.prefetch
                    )
                    self._lanes[(topic, i)] = lane
                    (self.standing_by if standby else self.consuming).setdefault(topic, set()).add(
                        i
                    )
                    todo.pop(0)
            except AmqpError as exc:
                if exc.permanent:
                    raise
                # The broker may be starting: a service keeps trying rather than dying.
                log.warning("bus: cannot consume %s yet: %s", topic, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def ready(self) -> None:
        """Wait until every subscription consumes (raises what stopped one)."""
        if self._setups:
            await asyncio.gather(*self._setups)

    # -- publishing --

    async def publish(self, topic: str, message: Any, key: str = "") -> None:
        body = self.codec(topic).encode(message)
        await self._send(topic, partition_of(key, self.partitions), body, {KEY: key})

    async def publish_many(self, topic: str, items: Sequence[tuple[str, Any]]) -> None:
        if len(items) == 1:
            key, message = items[0]
            await self.publish(topic, message, key)
            return
        codec = self.codec(topic)
        parts: dict[int, list[tuple[str, bytes]]] = {}
        for key, message in items:
            part = parts.setdefault(partition_of(key, self.partitions), [])
            part.append((key, codec.encode(message)))
        # Partitions side by side; within one, batches in order (bounded in size: a
        # replay of a long backlog is many messages, not one of any size).
        await asyncio.gather(*(self._send_batches(topic, p, b) for p, b in parts.items()))

    async def _send_batches(
        self, topic: str, partition: int, part: list[tuple[str, bytes]]
    ) -> None:
        for i in range(0, len(part), MAX_BATCH):
            these = part[i : i + MAX_BATCH]
            body = b"[" + b",".join(b for _, b in these) + b"]"
            keys = orjson.dumps(sorted({k for k, _ in these})).decode()
            await self._send(topic, partition, body, {BATCH: len(these), KEYS: keys})

    async def _send(self, topic: str, partition: int, body: bytes, headers: dict[str, Any]) -> None:
        message_id = uuid.uuid4().hex
        tracked = partition in self._consumed.get(topic, ())
        if tracked:
            self._outstanding.add(message_id)
        deadline = time.monotonic() + self.publish_timeout
        delay = 0.05
        while True:
            try:
                await self._topic(topic)
                await self.broker.publish(
                    self.exchange(topic),
                    str(partition),
                    body,
                    headers=headers,
                    message_id=message_id,
                )
                return
            except AmqpError as exc:
                left = deadline - time.monotonic()
                if exc.permanent or left <= 0 or self._closed:
                    self._outstanding.discard(message_id)
                    self._progress.set()
                    raise BusError(f"could not publish to {topic!r}: {exc}") from exc
                # The broker is restarting or the link is down: the robust connection
                # comes back by itself; the message goes again (at least once).
                log.warning("bus: publish to %s failed, trying again: %s", topic, exc)
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)

    # -- consuming --

    def _on_delivery(self, lane: Lane) -> DeliveryHandler:
        topic, partition = lane.topic, lane.partition

        async def on_delivery(delivery: Delivery) -> None:
            # Taken before anything is awaited: places follow the order of deliveries.
            turn = lane.order.take(_keys(delivery))
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await turn.ready()
                if lane.released:
                    # Being handed back: left unacked, the message goes back to the
                    # queue, in order, when the hand-back closes the channel.
                    return
                if lane.standby:
                    self.taken_over.setdefault(topic, set()).add(partition)
                with lane.order.running():
                    await self._handle(lane, delivery)
            finally:
                turn.leave()
                if task is not None:
                    self._running.discard(task)

        return on_delivery

    async def _handle(self, lane: Lane, delivery: Delivery) -> None:
        topic = lane.topic
        message_id = _message_id(delivery)
        codec = self.codec(topic)
        try:
            if delivery.headers.get(BATCH) is None:
                messages = [codec.decode(delivery.body)]
            else:
                messages = [codec.from_json(m) for m in orjson.loads(delivery.body)]
        except Exception:
            log.exception("bus: undecodable message dead-lettered", extra={"topic": topic})
            await self._settle(delivery, ok=False)
            return
        while True:
            # Redelivered by the broker, or failed here before: handlers check what was done.
            again = delivery.redelivered or message_id in self._attempts
            try:
                with handling(again):
                    for handler in self._handlers.get(topic, ()):
                        await handler(messages)
                break
            except Exception:
                attempts = self._attempts.get(message_id, 0) + 1
                if attempts >= self.max_attempts:
                    log.exception(
                        "bus: handler failed for good; message dead-lettered",
                        extra={"topic": topic, "message_id": message_id, "attempts": attempts},
                    )
                    await self._settle(delivery, ok=False)
                    return
                self._attempts[message_id] = attempts
                log.exception(
                    "bus: handler failed; the message is tried again",
                    extra={"topic": topic, "message_id": message_id, "attempts": attempts},
                )
            # Tried again here, its keys held meanwhile: back in the queue, it would be
            # overtaken by its keys' later messages, already delivered to this process.
            await asyncio.sleep(self.retry_delay)
            if lane.released or self._closed:
                return  # unacked: the broker gives it to whoever consumes the partition
        await self._settle(delivery, ok=True)

    async def _settle(self, delivery: Delivery, ok: bool) -> None:
        """Ack a message handled, or reject one (dead-lettered) that never will be. One
        not to be handled here is left unacked instead: the broker gives it back to the
        partition's consumer when this one's channel closes."""
        message_id = _message_id(delivery)
        try:
            if ok:
                await delivery.ack()
            else:
                await delivery.reject()
        except AmqpError as exc:
            # The channel went away: the broker delivers the message again.
            log.warning("bus: could not settle a message: %s", exc)
            return
        self._attempts.pop(message_id, None)
        if message_id in self._outstanding:
            self._outstanding.discard(message_id)
            self._progress.set()

    async def drain(self) -> None:
        """Wait until every message this process published to a partition it consumes
        has been handled (acked or dead-lettered).

        Messages for partitions that other processes consume are only waited for until
        the broker confirmed them (`publish` returns then). With several replicas on the
        same partitions, the broker may feed another one: drain is for a single process
        and for tests.
        """
        await self.ready()
        while self._outstanding:
            self._progress.clear()
            await self._progress.wait()

    async def close(self) -> None:
        """Stop: handlers still running are cancelled and their messages stay unacked,
        so the broker gives them to another subscriber (or to this one when it returns)."""
        self._closed = True
        tasks = [*self._setups, *self._standbys, *self._running, *self._topics.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._rebalancer is not None:
            await self._rebalancer.release()
        await self.broker.close()
        self._outstanding.clear()
        self._progress.set()
