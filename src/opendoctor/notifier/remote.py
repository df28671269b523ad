"""The inspector → notifier hop when the two run in different processes: a bus topic.

In one process the inspector calls the notifier directly. Split (`serve --role`), the
inspector publishes a fault's notifications (its batches, one per root cause) as one
message to the `notifications` topic, keyed by host so that one host's notifications
stay in order, and whichever notifier replica consumes that partition sends them all
at once. The message carries the events with their stable
message ids: one delivered twice (a replica killed before its ack) rebuilds the same
outbox entries. The notifier that gets it again skips what the outbox holds already
(sent by the one that died); only a callback sent and not yet stored when its sender
died goes out twice, with the same request id both times.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from opendoctor.core.model import NotificationEvent, Trait
from opendoctor.core.notifications import Batch, OutboxEntry
from opendoctor.core.ports import Bus, Handler
from opendoctor.notifier.notifier import Notifier

log = logging.getLogger(__name__)

NOTIFICATIONS_TOPIC = "notifications"


def _encode_events(events: list[NotificationEvent]) -> list[dict[str, Any]]:
    return [
        {
            "event_type": e.event_type,
            "traits": [t.as_list() for t in e.traits.values()],
            "generated": e.generated,
            "message_id": e.message_id,
            "fault_id": e.fault_id,
        }
        for e in events
    ]


def _decode_events(raw: list[dict[str, Any]]) -> list[NotificationEvent]:
    return [
        NotificationEvent(
            event_type=e["event_type"],
            traits={t[0]: Trait(t[0], t[1], t[2]) for t in e["traits"]},
            generated=e["generated"],
            message_id=e["message_id"],
            fault_id=e.get("fault_id"),
        )
        for e in raw
    ]


def encode(batches: Sequence[Batch]) -> dict[str, Any]:
    return {
        "batches": [
            {"events": _encode_events(events), "root_cause": root_cause}
            for events, root_cause in batches
        ]
    }


def decode(message: dict[str, Any]) -> list[Batch]:
    return [(_decode_events(b["events"]), b.get("root_cause")) for b in message["batches"]]


def _key(events: list[NotificationEvent]) -> str:
    host = events[0].traits.get("host")
    if host is not None:
        return str(host.value)
    return events[0].fault_id or events[0].message_id


class BusNotifications:
    """What the inspector notifies through when no notifier runs in its process."""

    def __init__(self, bus: Bus, retry_interval: float = 1.0) -> None:
        self.bus = bus
        self.retry_interval = retry_interval

    async def notify_many(self, batches: Sequence[Batch]) -> list[OutboxEntry]:
        """Hand the batches to the notifiers, in one message (one notifier sends them all
        at once); returns no entries (they are sent elsewhere).

        Keeps trying while the broker is away: the event being handled is not acked
        meanwhile, so if this process dies the event goes to another replica, which
        notifies again with the same ids. Giving up would lose the owners' notifications.
        """
        batches = [(events, cause) for events, cause in batches if events]
        if not batches:
            return []
        message = encode(batches)
        key = _key(batches[0][0])
        while True:
            try:
                await self.bus.publish(NOTIFICATIONS_TOPIC, message, key=key)
                return []
            except Exception as exc:
                log.error(
                    "notifications not handed to the notifiers yet; trying again",
                    extra={"batches": len(batches), "error": str(exc)},
                )
                await asyncio.sleep(self.retry_interval)

    async def landed(self, entries: Sequence[OutboxEntry]) -> None:
        """Nothing to wait for here: the notifiers time their own deliveries."""


def handler(notifier: Notifier) -> Handler:
    """The notifier replicas' side: send what an inspector asked for."""

    async def handle(message: Any) -> None:
        await notifier.notify_many(decode(message))

    return handle
