"""The bus a process's settings ask for: in-process, or RabbitMQ (`bus.kind`)."""

from __future__ import annotations

from opendoctor.bus.memory import InProcessBus
from opendoctor.core.ports import Bus, Presence
from opendoctor.core.settings import Settings


def make_bus(settings: Settings, presence: Presence | None = None) -> Bus:
    bus = settings.bus
    if bus.kind == "memory":
        return InProcessBus(bus.workers)
    from opendoctor.bus.amqp import AmqpBus

    return AmqpBus(
        bus.url,
        prefix=bus.prefix,
        partitions=bus.partitions,
        consume=bus.consume,
        retry_delay=bus.retry_delay,
        max_attempts=bus.max_attempts,
        publish_timeout=bus.publish_timeout,
        reconnect_interval=bus.reconnect_interval,
        standby_after=bus.standby_after if bus.consume is not None else None,
        # Replicas claim their partitions in the database, to be handed them back.
        presence=presence,
        presence_ttl=bus.presence_ttl,
        workers=bus.workers,
    )
