"""Nova's versioned notifications, as the changes the graph follows.

Nova publishes them (with `[notifications] notification_format = versioned` and the
`messagingv2` driver) on its RabbitMQ, to the topic exchange `nova` with the routing
keys `versioned_notifications.info` and `.error`. This reader binds a queue of its own
(it lives as long as the connection, so it never steals the messages of another
consumer) and turns each `instance.*` and `service.update` notification into a
`VimChange`: within milliseconds of Nova's own change, where polling takes seconds.
A message it cannot read is logged and dropped: the poll corrects what it missed.

Each change carries when it was true (`Stamped`): Nova's services publish on several
connections, so an older state of a server can arrive after a newer one, and a poll's
answer, read before a notification came, can arrive after it. `Newest` keeps the graph
from going back to such a state (a server evacuated, ACTIVE, shown in ERROR for good).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from opendoctor.core.model import Host, Server, VimChange
from opendoctor.infra.amqp import Broker, Delivery

log = logging.getLogger(__name__)

# Nova's vm_state as the API's status (nova/api/openstack/common.py keeps the table).
STATUS = {
    "active": "ACTIVE",
    "building": "BUILD",
    "stopped": "SHUTOFF",
    "paused": "PAUSED",
    "suspended": "SUSPENDED",
    "rescued": "RESCUE",
    "resized": "VERIFY_RESIZE",
    "soft-delete": "SOFT_DELETED",
    "deleted": "DELETED",
    "error": "ERROR",
    "shelved": "SHELVED",
    "shelved_offloaded": "SHELVED_OFFLOADED",
}


class Stamped(NamedTuple):
    change: VimChange
    at: float  # when the VIM had it so (epoch seconds)


class Newest:
    """Which changes to a server are newer than what was applied (per server, by stamp)."""

    # Servers remembered at most; beyond it, those not changed for `FORGET` seconds go.
    LIMIT = 200_000
    FORGET = 600.0

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def admit(self, stamped: Stamped) -> bool:
        server = stamped.change.server
        if server is None:
            return True
        if stamped.at < self._at.get(server.id, float("-inf")):
            return False
        if len(self._at) >= self.LIMIT:
            horizon = time.time() - self.FORGET
            self._at = {k: v for k, v in self._at.items() if v >= horizon}
        self._at[server.id] = stamped.at
        return True


def _emitted(message: dict[str, Any]) -> float:
    """When Nova sent the notification (oslo.messaging's `timestamp`, UTC); now if it
    does not say."""
    raw = message.get("timestamp")
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw).replace(tzinfo=UTC).timestamp()
        except ValueError:
            pass
    return time.time()


def _data(obj: Any) -> dict[str, Any]:
    """The fields of a serialized Nova object (`nova_object.data`)."""
    if isinstance(obj, dict):
        data = obj.get("nova_object.data", obj)
        return data if isinstance(data, dict) else {}
    return {}


def parse(body: bytes, heartbeat_port: int = 0) -> Stamped | None:
    """The change a notification says, with when Nova sent it; None if not one the
    graph follows."""
    envelope = json.loads(body)
    message = envelope.get("oslo.message", envelope)
    if isinstance(message, str):  # oslo.messaging's 2.0 envelope: the message as text
        message = json.loads(message)
    change = _change(message, heartbeat_port)
    return None if change is None else Stamped(change, _emitted(message))


def _change(message: dict[str, Any], heartbeat_port: int) -> VimChange | None:
    event = str(message.get("event_type", ""))
    payload = _data(message.get("payload"))
    if event.startswith("instance."):
        uuid = payload.get("uuid")
        if not uuid:
            return None
        state = str(payload.get("state") or "")
        flavor = _data(payload.get("flavor"))
        server = Server(
            id=str(uuid),
            name=str(payload.get("display_name") or ""),
            host=str(payload.get("host") or ""),
            project_id=str(payload.get("tenant_id") or ""),
            status=STATUS.get(state, state.upper() or "UNKNOWN"),
            metadata={str(k): str(v) for k, v in (payload.get("metadata") or {}).items()},
            vcpus=_count(flavor.get("vcpus")),
            ram_mb=_count(flavor.get("memory_mb")),
        )
        gone = event == "instance.delete.end" or state in ("deleted", "soft-delete")
        return VimChange("server", "delete" if gone else "upsert", server=server)
    if event == "service.update" and payload.get("binary") == "nova-compute":
        forced = bool(payload.get("forced_down"))
        host = Host(
            name=str(payload.get("host") or ""),
            address="",  # not in the notification: the graph keeps what it had
            heartbeat_port=heartbeat_port,
            state="down" if forced else "up",
            forced_down=forced,
            enabled=not payload.get("disabled"),
        )
        return VimChange("host", "upsert", host=host) if host.name else None
    return None


class NovaNotifications:
    def __init__(
        self,
        url: str,
        *,
        exchange: str = "nova",
        topic: str = "versioned_notifications",
        heartbeat_port: int = 0,
    ) -> None:
        self.broker = Broker(url, name="opendoctor-nova-notifications")
        self.exchange = exchange
        self.topic = topic
        self.heartbeat_port = heartbeat_port
        self._queue: asyncio.Queue[Stamped] = asyncio.Queue()

    async def _on(self, delivery: Delivery) -> None:
        try:
            change = parse(delivery.body, self.heartbeat_port)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("unreadable Nova notification dropped", extra={"error": str(exc)})
            change = None
        if change is not None:
            self._queue.put_nowait(change)
        await delivery.ack()

    async def start(self) -> None:
        """Bind and consume (raises `AmqpError` if the broker cannot be reached)."""
        # As oslo.messaging declares it by default: a topic exchange, not durable.
        await self.broker.declare_exchange(self.exchange, "topic", durable=False)
        keys = [(self.exchange, f"{self.topic}.{p}") for p in ("info", "error")]
        queue = await self.broker.declare_queue(durable=False, exclusive=True, bind=keys)
        await self.broker.consume(queue, self._on, prefetch=64)

    async def changes(self) -> AsyncIterator[Stamped]:
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        await self.broker.close()


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
