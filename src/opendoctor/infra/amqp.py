"""RabbitMQ (AMQP 0-9-1), behind one module: the only place that imports aio-pika.

* URLs: `parse_broker_url` (a broker), `parse_action_url` (an alarm action: where to
  publish) and `parse_listen_url` (what a consumer binds), with error messages that
  name the problem.
* `Broker`: one robust connection (it reconnects by itself and re-declares what it
  declared), a publisher-confirm channel, declarations, `publish` (persistent; returns
  once the broker confirmed it, raises `AmqpError` otherwise) and `consume` (manual
  acks, a prefetch per consumer).

Everything that goes wrong surfaces as `AmqpError`; `permanent` says whether trying
again can help (bad credentials, an exchange of another type) or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq import exceptions as pika_errors
from pamqp.commands import Basic
from yarl import URL

from opendoctor.infra.amqpurl import (
    MAX_NAME,
    SCHEMES,
    AmqpError,
    BrokerUrl,
    Target,
    check_exchange,
    check_routing_key,
    parse_action_url,
    parse_broker_url,
    parse_listen_url,
)
from opendoctor.infra.tasks import Background

# The URL helpers live in `amqpurl` (no client needed there); found here too.
__all__ = [
    "MAX_NAME",
    "SCHEMES",
    "AmqpError",
    "Broker",
    "BrokerUrl",
    "Delivery",
    "DeliveryHandler",
    "QueueState",
    "Subscription",
    "Target",
    "check_exchange",
    "check_routing_key",
    "parse_action_url",
    "parse_broker_url",
    "parse_listen_url",
]

log = logging.getLogger(__name__)

ExchangeKind = Literal["topic", "direct", "fanout"]


# --- the client ------------------------------------------------------------------------------


@dataclass(slots=True)
class Delivery:
    """One message received, to be acked, nacked (requeued) or rejected (dead-lettered)."""

    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    exchange: str
    routing_key: str
    redelivered: bool
    content_type: str
    persistent: bool
    _message: AbstractIncomingMessage = field(repr=False)

    def header(self, name: str) -> str:
        value = self.headers.get(name)
        if isinstance(value, bytes):
            return value.decode(errors="replace")
        return "" if value is None else str(value)

    async def ack(self) -> None:
        with _errors("ack"):
            await self._message.ack()

    async def nack(self, requeue: bool = True) -> None:
        with _errors("nack"):
            await self._message.nack(requeue=requeue)

    async def reject(self) -> None:
        """Give up on the message: the broker dead-letters it (or drops it)."""
        with _errors("reject"):
            await self._message.reject(requeue=False)


DeliveryHandler = Callable[[Delivery], Awaitable[None]]


@dataclass(slots=True, frozen=True)
class QueueState:
    messages: int  # ready to be delivered (not those delivered and unacked)
    consumers: int


def _translate(exc: BaseException, doing: str, where: str = "") -> AmqpError:
    """The client's exception as an `AmqpError` with a readable message."""
    doing = f"{doing} on {where}" if where else doing
    if isinstance(exc, TimeoutError):
        return AmqpError(f"{doing}: no answer from the broker in time")
    if isinstance(exc, pika_errors.ChannelPreconditionFailed):
        return AmqpError(
            f"{doing}: refused, the broker has it already with other settings ({exc})",
            permanent=True,
        )
    if isinstance(exc, pika_errors.ChannelAccessRefused | pika_errors.ProbableAuthenticationError):
        return AmqpError(
            f"{doing}: access refused ({exc}); check the user, password and vhost",
            permanent=True,
        )
    if isinstance(exc, pika_errors.InvalidFrameError) and "Connection.Close" in str(exc):
        # What RabbitMQ answers to a virtual host that is missing or not allowed.
        return AmqpError(
            f"{doing}: the broker refused to open the virtual host; check that it exists "
            "and that the user may use it",
            permanent=True,
        )
    if isinstance(exc, pika_errors.PublishError):
        return AmqpError(f"{doing}: no queue is bound for the message's routing key")
    if isinstance(exc, pika_errors.DeliveryError):
        return AmqpError(f"{doing}: the broker did not confirm the message ({exc})")
    return AmqpError(f"{doing}: {type(exc).__name__}: {exc}")


# What the client raises when the broker or the network fails.
_CLIENT_ERRORS = (
    TimeoutError,
    pika_errors.AMQPError,
    ConnectionError,
    OSError,
    RuntimeError,
)


@contextmanager
def _errors(doing: str, where: str = "") -> Iterator[None]:
    try:
        yield
    except AmqpError:
        raise
    except _CLIENT_ERRORS as exc:
        raise _translate(exc, doing, where) from exc


class Subscription:
    """A consumer on one queue, on a channel of its own (closing it requeues what is unacked)."""

    def __init__(self, channel: AbstractRobustChannel, queue: str, tag: str) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag

    async def close(self) -> None:
        if not self.channel.is_closed:
            try:
                await self.channel.close()
            except Exception as exc:  # closing is best effort: the broker requeues anyway
                log.debug("closing a consumer channel failed: %s", exc)


class Broker:
    """One robust connection to a broker, shared by everything that talks to it.

    The connection reconnects by itself (every `reconnect_interval` seconds) and
    re-declares the exchanges, queues, bindings and consumers declared through it.
    Publications are not replayed: `publish` raises and the caller decides to retry.
    """

    def __init__(
        self,
        url: BrokerUrl | str,
        *,
        name: str = "opendoctor",
        timeout: float = 5.0,
        reconnect_interval: float = 1.0,
    ) -> None:
        self.broker = url if isinstance(url, BrokerUrl) else parse_broker_url(url)
        self.name = name
        self.timeout = timeout
        self.reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._declarer: AbstractRobustChannel | None = None
        self._lock = asyncio.Lock()
        self._subscriptions: list[Subscription] = []
        self._handling = Background()
        self._closed = False

    def __repr__(self) -> str:
        return f"Broker({self.broker.safe!r})"

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def connect(self) -> None:
        """Connect once (idempotent); raises `AmqpError` if the broker cannot be reached."""
        if self._closed:
            raise AmqpError(f"the connection to {self.broker} was closed")
        if self._connection is not None:
            return
        async with self._lock:
            if self._connection is not None:
                return
            # Made here rather than by connect_robust, so that a connection that times out
            # is closed instead of reconnecting in the background for ever.
            connection = aio_pika.RobustConnection(
                URL(self.broker.url),
                # With the process id, the broker's view of channels and unacked
                # messages (`rabbitmqctl list_connections client_properties`) names
                # which process of a scaled-out deployment holds what.
                client_properties={"connection_name": f"{self.name} pid {os.getpid()}"},
                reconnect_interval=self.reconnect_interval,
            )
            try:
                with _errors("connecting", str(self.broker)):
                    async with asyncio.timeout(self.timeout):
                        await connection.connect(timeout=self.timeout)
                        # Publisher confirms, and an unroutable message raises.
                        publisher = await connection.channel(
                            publisher_confirms=True, on_return_raises=True
                        )
                        declarer = await connection.channel(publisher_confirms=False)
            except BaseException:
                with contextlib.suppress(Exception):
                    await connection.close()
                raise
            self._publisher = publisher
            self._declarer = declarer
            self._connection = connection
            log.info("connected to the broker", extra={"broker": self.broker.safe})

    async def _channel(self, which: Literal["publisher", "declarer"]) -> AbstractRobustChannel:
        await self.connect()
        channel = self._publisher if which == "publisher" else self._declarer
        if channel is None:
            raise AmqpError(f"not connected to {self.broker}")
        # Waits while the connection is being restored (bounded by the caller's timeout).
        await channel.ready()
        return channel

    async def declare_exchange(
        self, name: str, kind: ExchangeKind = "topic", *, durable: bool = True
    ) -> None:
        """An exchange, durable unless told otherwise (another service's, declared as it
        declares it); a no-op if it exists alike."""
        await self.connect()
        with _errors(f"declaring exchange {name!r}", str(self.broker)):
            async with asyncio.timeout(self.timeout):
                channel = await self._channel("declarer")
                await channel.declare_exchange(name, type=kind, durable=durable)

    async def declare_queue(
        self,
        name: str | None = None,
        *,
        durable: bool = True,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        bind: list[tuple[str, str]] | None = None,
    ) -> str:
        """A queue (durable unless told otherwise), bound to (exchange, key) pairs.

        Without a name the queue gets a unique one; an exclusive queue lives as long as
        this connection. Returns the queue's name.
        """
        await self.connect()
        name = name or f"{self.name}.{uuid.uuid4().hex}"
        with _errors(f"declaring queue {name!r}", str(self.broker)):
            async with asyncio.timeout(self.timeout):
                channel = await self._channel("declarer")
                queue = await channel.declare_queue(
                    name,
                    durable=durable,
                    exclusive=exclusive,
                    auto_delete=exclusive,
                    arguments=arguments,
                )
                for exchange, key in bind or ():
                    await queue.bind(exchange, key)
        return name

    async def inspect_queue(self, name: str) -> QueueState:
        """The queue's messages ready and consumers now; `AmqpError` if it does not exist."""
        await self.connect()
        assert self._connection is not None
        with _errors(f"inspecting queue {name!r}", str(self.broker)):
            async with asyncio.timeout(self.timeout):
                # A channel of its own: asking about a missing queue closes the channel.
                channel = await self._connection.channel(publisher_confirms=False)
                try:
                    queue = await channel.declare_queue(name, passive=True)
                finally:
                    with contextlib.suppress(Exception):
                        await channel.close()
        declared = queue.declaration_result
        return QueueState(int(declared.message_count or 0), int(declared.consumer_count or 0))

    async def delete_queue(self, name: str) -> None:
        await self.connect()
        with _errors(f"deleting queue {name!r}", str(self.broker)):
            async with asyncio.timeout(self.timeout):
                channel = await self._channel("declarer")
                await channel.queue_delete(name)

    async def delete_exchange(self, name: str) -> None:
        await self.connect()
        with _errors(f"deleting exchange {name!r}", str(self.broker)):
            async with asyncio.timeout(self.timeout):
                channel = await self._channel("declarer")
                await channel.exchange_delete(name)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: dict[str, Any] | None = None,
        content_type: str = "application/json",
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish a persistent message and wait for the broker's confirm.

        Raises `AmqpError` if the broker nacks it, if no queue is bound for it (the
        message is mandatory: nobody would get it), or if no confirm comes in time.
        """
        message = aio_pika.Message(
            body,
            headers=headers or {},
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
        )
        where = f"exchange {exchange!r} of {self.broker}"
        with _errors(f"publishing with routing key {routing_key!r}", where):
            async with asyncio.timeout(timeout or self.timeout):
                channel = await self._channel("publisher")
                target = await channel.get_exchange(exchange, ensure=False)
                confirm = await target.publish(message, routing_key, mandatory=True)
            if not isinstance(confirm, Basic.Ack):
                raise AmqpError(f"publishing to {where}: the broker did not confirm ({confirm!r})")

    async def consume(
        self, queue: str, handler: DeliveryHandler, *, prefetch: int = 1
    ) -> Subscription:
        """Call `handler` for each message of `queue`, at most `prefetch` unacked at once.

        The handler acks, nacks or rejects each delivery itself. The consumer is restored
        after a reconnection; what was unacked when the connection dropped is redelivered.
        """
        await self.connect()
        assert self._connection is not None

        async def on_message(message: AbstractIncomingMessage) -> None:
            delivery = Delivery(
                body=message.body,
                headers=dict(message.headers or {}),
                message_id=message.message_id,
                exchange=message.exchange or "",
                routing_key=message.routing_key or "",
                redelivered=bool(message.redelivered),
                content_type=message.content_type or "",
                persistent=message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT,
                _message=message,
            )
            # The client cancels its callbacks when the connection drops: cut off between
            # two writes, a handler would leave its work half done. In a task of its own
            # it finishes; its ack fails and the redelivery finds the work done.
            await asyncio.shield(self._handling.spawn(handler(delivery)))

        with _errors(f"consuming from {queue!r}", str(self.broker)):
            async with asyncio.timeout(self.timeout):
                channel: AbstractRobustChannel = await self._connection.channel(
                    publisher_confirms=False
                )
                await channel.set_qos(prefetch_count=prefetch)
                amqp_queue = await channel.get_queue(queue, ensure=True)
                tag = await amqp_queue.consume(on_message)
        subscription = Subscription(channel, queue, tag)
        self._subscriptions.append(subscription)
        return subscription

    async def close(self) -> None:
        """Close everything; the broker requeues whatever was delivered and not acked."""
        self._closed = True
        await self._handling.close()
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception as exc:
                log.debug("closing the connection failed: %s", exc)
