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
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq import exceptions as pika_errors
from pamqp.commands import Basic
from yarl import URL

log = logging.getLogger(__name__)

SCHEMES = {"amqp": 5672, "amqps": 5671}
ExchangeKind = Literal["topic", "direct", "fanout"]
MAX_NAME = 255  # AMQP short strings: exchange and queue names, routing keys


class AmqpError(Exception):
    """A broker operation failed. `permanent`: trying again will not help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# --- URLs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where a broker is: `amqp[s]://user:password@host:port/vhost` (vhost `/` by default)."""

    scheme: str
    host: str
    port: int
    user: str = "guest"
    password: str = field(default="guest", repr=False)
    vhost: str = "/"

    @property
    def url(self) -> str:
        """The URL with credentials, for the client library."""
        auth = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}@"
        return f"{self.scheme}://{auth}{self._where()}"

    @property
    def safe(self) -> str:
        """The URL without the password: for logs and error messages."""
        return f"{self.scheme}://{quote(self.user, safe='')}@{self._where()}"

    def _where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        vhost = "" if self.vhost == "/" else quote(self.vhost, safe="")
        return f"{host}:{self.port}/{vhost}"

    def __str__(self) -> str:
        return self.safe


@dataclass(frozen=True, slots=True)
class Target:
    """An exchange on a broker and a routing key (or, to listen, a binding key and a queue)."""

    broker: BrokerUrl
    exchange: str
    routing_key: str
    queue: str | None = None


def _split(url: str, what: str) -> tuple[BrokerUrl, dict[str, str]]:
    if any(c.isspace() for c in url):
        raise ValueError(f"{what} {url!r} contains whitespace")
    if "#" in url:
        raise ValueError(
            f"{what} {url!r}: '#' starts a URL fragment; write the wildcard '#' as %23"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{what} {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f"{what} {url!r}: the scheme must be amqp or amqps")
    if not parts.hostname:
        raise ValueError(f"{what} {url!r} has no host")
    path = parts.path
    if path.count("/") > 1:
        raise ValueError(
            f"{what} {url!r}: the path is the virtual host, one segment "
            "(write a '/' inside a vhost name as %2F)"
        )
    vhost = unquote(path[1:]) or "/"
    params: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name in params:
            raise ValueError(f"{what} {url!r}: query parameter {name!r} is given twice")
        params[name] = value
    broker = BrokerUrl(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or SCHEMES[parts.scheme],
        user=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=vhost,
    )
    return broker, params


def _only(url: str, what: str, params: dict[str, str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"{what} {url!r}: unknown query parameter {unknown[0]!r} "
            f"(allowed: {', '.join(allowed) or 'none'})"
        )


def check_exchange(name: str) -> str:
    """A named exchange we may declare: not the default one, not a reserved `amq.` name."""
    if not name:
        raise ValueError("the exchange name is missing (add ?exchange=NAME)")
    if len(name.encode()) > MAX_NAME:
        raise ValueError(f"the exchange name is longer than {MAX_NAME} bytes")
    if name.startswith("amq."):
        raise ValueError(f"exchange {name!r}: names starting with 'amq.' are reserved by AMQP")
    bad = [c for c in name if not (c.isalnum() or c in "-_.:")]
    if bad:
        raise ValueError(
            f"exchange {name!r}: character {bad[0]!r} is not allowed "
            "(use letters, digits, '-', '_', '.', ':')"
        )
    return name


def check_routing_key(key: str, *, binding: bool = False) -> str:
    if len(key.encode()) > MAX_NAME:
        raise ValueError(f"the routing key is longer than {MAX_NAME} bytes")
    if not binding and ("*" in key or "#" in key):
        raise ValueError(
            f"routing key {key!r}: '*' and '#' are wildcards of binding keys; a message is "
            "published with a plain key such as 'opendoctor.alarm.project-a'"
        )
    return key


def parse_broker_url(url: str, what: str = "broker URL") -> BrokerUrl:
    """`amqp[s]://user:password@host[:port][/vhost]`, no query parameters."""
    broker, params = _split(url, what)
    _only(url, what, params, ())
    return broker


def parse_action_url(url: str) -> Target:
    """An alarm action: `amqp[s]://user:pass@host[:port]/[vhost]?exchange=X&routing_key=K`."""
    what = "AMQP action"
    broker, params = _split(url, what)
    _only(url, what, params, ("exchange", "routing_key"))
    try:
        exchange = check_exchange(params.get("exchange", ""))
        if "routing_key" not in params or not params["routing_key"]:
            raise ValueError("the routing key is missing (add &routing_key=KEY)")
        key = check_routing_key(params["routing_key"])
    except ValueError as exc:
        raise ValueError(f"{what} {url!r}: {exc}") from None
    return Target(broker, exchange, key)


def parse_listen_url(url: str, routing_key: str | None = None, queue: str | None = None) -> Target:
    """What a consumer listens on: `amqp[s]://…/[vhost]?exchange=X[&routing_key=K][&queue=Q]`.

    The routing key is a binding key (wildcards allowed; `#`, everything, by default).
    Without a queue name the consumer gets a private queue that goes away with it; with
    one, a durable queue that keeps what arrives while the consumer is down.
    """
    what = "AMQP listen URL"
    broker, params = _split(url, what)
    _only(url, what, params, ("exchange", "routing_key", "queue"))
    try:
        exchange = check_exchange(params.get("exchange", ""))
        key = check_routing_key(routing_key or params.get("routing_key") or "#", binding=True)
        name = queue or params.get("queue") or None
        if name is not None and (name.startswith("amq.") or len(name.encode()) > MAX_NAME):
            raise ValueError(f"queue {name!r}: not 'amq.…' and at most {MAX_NAME} bytes")
    except ValueError as exc:
        raise ValueError(f"{what} {url!r}: {exc}") from None
    return Target(broker, exchange, key, name)


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
                client_properties={"connection_name": self.name},
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

    async def declare_exchange(self, name: str, kind: ExchangeKind = "topic") -> None:
        """A durable exchange (kept across broker restarts); a no-op if it exists alike."""
        await self.connect()
        with _errors(f"declaring exchange {name!r}", str(self.broker)):
            async with asyncio.timeout(self.timeout):
                channel = await self._channel("declarer")
                await channel.declare_exchange(name, type=kind, durable=True)

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
            await handler(delivery)

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
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception as exc:
                log.debug("closing the connection failed: %s", exc)
