"""`amqp://` and `amqps://` actions: the alarm callback, published to a topic exchange.

The action URL is `amqp[s]://user:password@host[:port]/[vhost]?exchange=NAME&routing_key=KEY`
(`opendoctor.infra.amqp.parse_action_url`). The message carries exactly the body the HTTP
sender POSTs, with the same `x-openstack-request-id` header (stable per outbox entry, so a
retried delivery can be deduplicated) and `content-type: application/json`. It is
persistent and published to a durable topic exchange, declared if missing; `send`
returns once the broker confirmed it. A message that no queue is bound for counts as
not delivered (the outbox tries again later), as a consumer that is down would.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import orjson

from opendoctor.core.egress import EgressPolicy
from opendoctor.core.notifications import OutboxEntry
from opendoctor.core.ports import DeliveryError
from opendoctor.infra.amqp import AmqpError, Broker, BrokerUrl, parse_action_url
from opendoctor.notifier.delivery import Signer, unsigned

log = logging.getLogger(__name__)


class AmqpSender:
    """One connection per broker (kept for the life of the sender), shared by all sends."""

    def __init__(
        self,
        timeout: float,
        name: str = "opendoctor-notifier",
        egress: EgressPolicy | None = None,
        signer: Signer = unsigned,
    ) -> None:
        self.timeout = timeout
        self.name = name
        self.egress = egress
        self.signer = signer
        self._brokers: dict[BrokerUrl, Broker] = {}
        self._declared: set[tuple[BrokerUrl, str]] = set()
        self._lock = asyncio.Lock()

    async def _allowed(self, url: BrokerUrl) -> None:
        """Every address the broker's name leads to must be one the policy allows: the
        client library resolves it again and may take any of them."""
        if self.egress is None:
            return
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                url.host, url.port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise DeliveryError(f"{url.safe}: {exc}") from exc
        for *_, sockaddr in found:
            problem = self.egress.problem(str(sockaddr[0]), url.port)
            if problem is not None:
                raise DeliveryError(f"{url.safe}: {problem}", retry=False)

    async def _broker(self, url: BrokerUrl) -> Broker:
        broker = self._brokers.get(url)
        if broker is None:
            await self._allowed(url)
            async with self._lock:
                broker = self._brokers.get(url)
                if broker is None:
                    broker = Broker(url, name=self.name, timeout=self.timeout)
                    self._brokers[url] = broker
        try:
            await broker.connect()
        except AmqpError:
            # A connection that never opened is not kept: the next attempt starts afresh.
            if self._brokers.get(url) is broker:
                del self._brokers[url]
            await broker.close()
            raise
        return broker

    async def send(self, entry: OutboxEntry) -> None:
        try:
            target = parse_action_url(entry.url)
        except ValueError as exc:
            raise DeliveryError(str(exc), retry=False) from None
        payload = entry.payload or orjson.dumps(entry.body)
        headers = {"x-openstack-request-id": f"req-{entry.id}", **self.signer(entry, payload)}
        declared = (target.broker, target.exchange)
        try:
            broker = await self._broker(target.broker)
            if declared not in self._declared:
                await broker.declare_exchange(target.exchange, "topic")
                self._declared.add(declared)
            await broker.publish(
                target.exchange,
                target.routing_key,
                payload,
                headers=headers,
                content_type="application/json",
                message_id=f"req-{entry.id}",
                timeout=self.timeout,
            )
        except AmqpError as exc:
            # Declared again next time: the exchange may have been deleted meanwhile.
            self._declared.discard(declared)
            raise DeliveryError(str(exc), retry=not exc.permanent) from exc

    async def close(self) -> None:
        brokers = list(self._brokers.values())
        self._brokers.clear()
        self._declared.clear()
        await asyncio.gather(*(b.close() for b in brokers), return_exceptions=True)
