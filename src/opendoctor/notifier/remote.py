"""The inspector → notifier hop when the two run in different processes: a bus topic.

In one process the inspector calls the notifier directly. Split (`serve --role`), the
inspector publishes each group of notifications to the `notifications` topic, keyed by
host so that one host's notifications stay in order, and whichever notifier replica
consumes that partition sends them. The message carries the events with their stable
message ids: one delivered twice (a replica killed before its ack) rebuilds the same
outbox entries, so an owner told twice sees the same request id both times.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from opendoctor.bus import Bus
from opendoctor.bus.base import Handler
from opendoctor.model import NotificationEvent, Trait
from opendoctor.notifier.notifier import Notifier
from opendoctor.store.outbox import OutboxEntry

log = logging.getLogger(__name__)

NOTIFICATIONS_TOPIC = "notifications"


def encode(events: list[NotificationEvent], root_cause: Any) -> dict[str, Any]:
    return {
        "events": [
            {
                "event_type": e.event_type,
                "traits": [t.as_list() for t in e.traits.values()],
                "generated": e.generated,
                "message_id": e.message_id,
                "fault_id": e.fault_id,
            }
            for e in events
        ],
        "root_cause": root_cause,
    }


def decode(message: dict[str, Any]) -> tuple[list[NotificationEvent], Any]:
    events = [
        NotificationEvent(
            event_type=e["event_type"],
            traits={t[0]: Trait(t[0], t[1], t[2]) for t in e["traits"]},
            generated=e["generated"],
            message_id=e["message_id"],
            fault_id=e.get("fault_id"),
        )
        for e in message["events"]
    ]
    return events, message.get("root_cause")


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

    async def notify(
        self, events: list[NotificationEvent], root_cause: Any = None
    ) -> list[OutboxEntry]:
        """Hand the events to the notifiers; returns no entries (they are sent elsewhere).

        Keeps trying while the broker is away: the event being handled is not acked
        meanwhile, so if this process dies the event goes to another replica, which
        notifies again with the same ids. Giving up would lose the owners' notifications.
        """
        if not events:
            return []
        message = encode(events, root_cause)
        key = _key(events)
        while True:
            try:
                await self.bus.publish(NOTIFICATIONS_TOPIC, message, key=key)
                return []
            except Exception as exc:
                log.error(
                    "notifications not handed to the notifiers yet; trying again",
                    extra={"events": len(events), "error": str(exc)},
                )
                await asyncio.sleep(self.retry_interval)


def handler(notifier: Notifier) -> Handler:
    """The notifier replicas' side: send what an inspector asked for."""

    async def handle(message: Any) -> None:
        events, root_cause = decode(message)
        await notifier.notify(events, root_cause)

    return handle
