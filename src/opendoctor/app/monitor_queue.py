"""The monitor queue in a process with the api role: Doctor events read from RabbitMQ
(`monitors.queue`), checked by `PUT /events`'s own parse and checks, kept as it keeps
them; a refusal names the first field refused."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

from opendoctor.api import events as events_api
from opendoctor.api.auth import Monitors
from opendoctor.api.events import DoctorEvent
from opendoctor.api.ratelimit import RateLimit
from opendoctor.core.errors import RequestError
from opendoctor.core.model import Event
from opendoctor.core.monitor_settings import QueueSettings
from opendoctor.monitor.queue import EventQueue, Refused

if TYPE_CHECKING:
    from opendoctor.api.facade import Facade
    from opendoctor.app.service import Service


def queue_consumers(service: Service) -> list[asyncio.Task[None]]:
    """The consumer's task where `monitors.queue.enabled` (cancel it to stop)."""
    settings = service.settings.monitors.queue
    if not settings.enabled:
        return []
    queue = monitor_queue(service.facade, settings)
    return [asyncio.create_task(queue.run(), name="monitor queue")]


def monitor_queue(facade: Facade, settings: QueueSettings) -> EventQueue:
    return EventQueue(settings, QueueIntake(facade, settings).take)


class QueueIntake:
    """What `PUT /events` does with a request, done with a message."""

    def __init__(self, facade: Facade, settings: QueueSettings) -> None:
        self.facade = facade
        self.settings = settings
        api = facade.settings.api
        self.monitors = Monitors.load(api)
        # The queue's own buckets: a monitor's events here do not eat its HTTP rate.
        self.rate = RateLimit(api.events_rate, api.events_burst)

    def reporter(self, token: str | None) -> str:
        if token is None:
            if self.settings.require_token:
                raise Refused("x-auth-token", "this queue takes only messages with a token")
            return self.settings.monitor
        try:
            return self.monitors.named(token)
        except RequestError as exc:
            raise Refused("x-auth-token", exc.message) from None

    def parse(self, raw: bytes) -> list[DoctorEvent]:
        try:
            return events_api.parse(raw, self.settings.max_events)
        except RequestError as exc:
            raise Refused(exc.field or "body", exc.message) from None
        except events_api.InvalidEvents as exc:
            first = exc.errors[0]
            raise Refused(first["field"], first["problem"]) from None

    def check_known(self, parsed: list[DoctorEvent]) -> None:
        try:
            events_api.check_known(self.facade, parsed)
        except RequestError as exc:
            raise Refused(exc.field or "body", exc.message) from None

    async def take(self, raw: bytes, token: str | None) -> int:
        reporter = self.reporter(token)
        parsed = self.parse(raw)
        # Over its rate, a monitor's messages wait here: the broker holds the rest.
        while wait := self.rate.take(reporter, len(parsed)):
            if math.isinf(wait):
                raise Refused("body", f"{len(parsed)} events at once, over api.events_burst")
            await asyncio.sleep(wait)
        self.check_known(parsed)
        events: list[Event] = events_api.to_events(parsed, reporter)
        await self.facade.submit(events)
        return len(events)
