"""The monitor queue in a process with the api role: Doctor events read from RabbitMQ
(`monitors.queue`), checked as `PUT /events` checks them, kept as it keeps them."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from opendoctor.api.auth import Monitors
from opendoctor.api.bounds import MAX_DEPTH, too_deep
from opendoctor.api.errors import validation_errors
from opendoctor.api.events import DoctorEvent, unwrap
from opendoctor.api.ratelimit import RateLimit
from opendoctor.core.errors import RequestError
from opendoctor.core.model import INSTANCE_EVENTS, RESOURCE_DOWN, Event
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

    def parse(self, raw: bytes, reporter: str) -> list[DoctorEvent]:
        if too_deep(raw):
            raise Refused("body", f"the JSON nests deeper than {MAX_DEPTH} levels")
        try:
            body: Any = orjson.loads(raw)
            items, prefix = unwrap(body)
        except orjson.JSONDecodeError as exc:
            raise Refused("body", f"malformed JSON: {exc}") from None
        except RequestError as exc:
            raise Refused(exc.field or "body", exc.message) from None
        if not items:
            raise Refused(prefix or "body", "no events in the message")
        if len(items) > self.settings.max_events:
            limit = self.settings.max_events
            raise Refused(prefix or "body", f"{len(items)} events, over {limit} (max_events)")
        parsed = []
        for i, item in enumerate(items):
            try:
                parsed.append(DoctorEvent.model_validate(item))
            except ValidationError as exc:
                first = validation_errors(list(exc.errors()))[0]
                where = f"{prefix}[{i}]" if len(items) > 1 or prefix == "events" else prefix
                field = ".".join(p for p in (where, first["field"]) if p and p != "body")
                raise Refused(field or "body", first["problem"]) from None
        return parsed

    def check_known(self, parsed: list[DoctorEvent]) -> None:
        """The checks of `PUT /events`: hosts, servers and graph resources it knows."""
        facade = self.facade
        hosts = {e.subject for e in parsed if e.type != RESOURCE_DOWN}
        unknown = sorted(hosts - facade.hosts().keys())
        if unknown:
            raise Refused("details.hostname", f"unknown host(s): {', '.join(unknown)}")
        missing = sorted(
            key
            for key in {e.subject for e in parsed if e.type == RESOURCE_DOWN}
            if (v := facade.graph.get(key)) is None or v.placeholder
        )
        if missing:
            raise Refused("details.resource_id", f"unknown resource(s): {', '.join(missing)}")
        servers = {
            e.details.instance_id
            for e in parsed
            if e.details.instance_id and e.type in INSTANCE_EVENTS
        }
        strangers = sorted(servers - facade.servers().keys())
        if strangers:
            raise Refused("details.instance_id", f"unknown server(s): {', '.join(strangers)}")

    async def take(self, raw: bytes, token: str | None) -> int:
        reporter = self.reporter(token)
        parsed = self.parse(raw, reporter)
        # Over its rate, a monitor's messages wait here: the broker holds the rest.
        while wait := self.rate.take(reporter, len(parsed)):
            if math.isinf(wait):
                raise Refused("body", f"{len(parsed)} events at once, over api.events_burst")
            await asyncio.sleep(wait)
        self.check_known(parsed)
        events: list[Event] = [p.to_event(reporter) for p in parsed]
        await self.facade.submit(events)
        return len(events)
