"""Doctor events from a RabbitMQ queue, for monitors that publish and do not speak HTTP
(the Doctor demo's Zabbix published its alerts so).

A message is acked once its events are kept (durable, as `PUT /events` answers 202
only then); one that can never be taken (malformed, too large, about an unknown host,
a token not known) is rejected, and goes to the queue's dead-letter exchange if the
operator gave it one; one that could not be kept now (the database is down) is tried
again every `retry_delay`, the messages after it waiting. The queue, and the exchange
it is bound to, are declared durable if missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from opendoctor.core.monitor_settings import QueueSettings
from opendoctor.infra.amqpurl import AmqpError

if TYPE_CHECKING:
    from opendoctor.infra.amqp import Delivery

log = logging.getLogger(__name__)


class Refused(ValueError):
    """A message that can never be taken; `field` names what is wrong with it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


# Takes one message's body (and the token it came with): returns once its events are
# kept; raises `Refused` for a message that can never be, anything else to retry it.
Take = Callable[[bytes, str | None], Awaitable[int]]


class EventQueue:
    def __init__(self, settings: QueueSettings, take: Take, name: str = "opendoctor") -> None:
        # Imported here: the client (the amqp extra) is needed only where the queue is on.
        from opendoctor.infra.amqp import Broker

        self.settings = settings
        self.take = take
        self.broker = Broker(settings.url.get_secret_value(), name=f"{name} monitor queue")
        self.consuming = asyncio.Event()  # set once the consumer is in place
        # One message at a time, in the order they came: a host's `up` published right
        # after its `down` must not be kept before it. The prefetch only keeps the next
        # messages at hand. (Several processes consuming one queue keep no such order.)
        self._in_order = asyncio.Lock()

    async def run(self) -> None:
        """Consume until cancelled. A broker that cannot be reached at start is tried
        again; once consuming, the connection restores itself and the consumer."""
        try:
            while True:
                try:
                    await self._declare_and_consume()
                    break
                except AmqpError as exc:
                    where = {"queue": self.settings.queue, "error": str(exc)}
                    if exc.permanent:  # credentials, a queue declared otherwise: say so once
                        log.error("cannot consume monitor events", extra=where)
                        return
                    log.warning("cannot consume monitor events yet", extra=where)
                    await asyncio.sleep(self.broker.reconnect_interval)
            await asyncio.Event().wait()  # until cancelled: the broker calls us back
        finally:
            with contextlib.suppress(Exception):
                await self.broker.close()

    async def _declare_and_consume(self) -> None:
        s = self.settings
        bind = None
        if s.exchange:
            await self.broker.declare_exchange(s.exchange, "topic")
            bind = [(s.exchange, s.routing_key)]
        await self.broker.declare_queue(s.queue, bind=bind)
        await self.broker.consume(s.queue, self._on, prefetch=s.prefetch)
        self.consuming.set()
        log.info("consuming monitor events", extra={"queue": s.queue, "broker": self.broker})

    async def _on(self, delivery: Delivery) -> None:
        where = {"queue": self.settings.queue, "message_id": delivery.message_id or ""}
        async with self._in_order:
            try:
                kept = await self._take(delivery, where)
            except Refused as exc:
                problem = {"field": exc.field, "problem": exc.problem}
                log.warning("monitor event refused", extra={**where, **problem})
                await _settle(delivery.reject())
                return
        await _settle(delivery.ack())
        log.debug("monitor events kept", extra={**where, "events": kept})

    async def _take(self, delivery: Delivery, where: dict[str, str]) -> int:
        size, limit = len(delivery.body), self.settings.max_message_bytes
        if size > limit:
            raise Refused("body", f"{size} bytes, over {limit} (max_message_bytes)")
        token = delivery.header("x-auth-token") or None
        while True:
            try:
                return await self.take(delivery.body, token)
            except Refused:
                raise
            except Exception as exc:
                # Not the message's fault (the store is down, say). Tried again here, not
                # put back: the messages after it wait, and a host's events stay in order.
                error = f"{type(exc).__name__}: {exc}"
                log.warning("monitor event not kept yet", extra={**where, "error": error})
                await asyncio.sleep(self.settings.retry_delay)


async def _settle(done: Awaitable[None]) -> None:
    # A connection lost before the ack: the broker redelivers; handling twice is harmless.
    try:
        await done
    except AmqpError as exc:
        log.info("a monitor event's ack was lost", extra={"error": str(exc)})
