"""The monitor queue's consumer on the real RabbitMQ: messages taken one at a time in
the order they came, one that cannot be kept now tried again before those after it,
one that can never be taken set aside."""

from __future__ import annotations

import asyncio
import contextlib

from pydantic import SecretStr

from opendoctor.core.monitor_settings import QueueSettings
from opendoctor.infra.amqp import Broker
from opendoctor.monitor.queue import EventQueue, Refused
from tests.conftest import eventually
from tests.integration.amqp.conftest import Names
from tests.integration.amqp.conftest import admin as admin  # fixtures of these tests too
from tests.integration.amqp.conftest import names as names


async def test_messages_are_taken_in_order_and_retried_in_place(
    amqp_url: str, names: Names, admin: Broker
) -> None:
    settings = QueueSettings(
        enabled=True,
        url=SecretStr(amqp_url),
        queue=names.queue(),
        exchange=names.exchange(),
        retry_delay=0.05,
    )
    taken: list[bytes] = []
    failures = {b"m1": 2}  # the store is down for m1's first two attempts

    async def take(body: bytes, token: str | None) -> int:
        if body == b"bad":
            raise Refused("body", "never")
        if failures.get(body, 0) > 0:
            failures[body] -= 1
            raise RuntimeError("the store is down")
        taken.append(body)
        return 1

    queue = EventQueue(settings, take, name="tests")
    task = asyncio.create_task(queue.run())
    try:
        await asyncio.wait_for(queue.consuming.wait(), 10)
        assert settings.exchange is not None
        for body in (b"m1", b"bad", b"m2", b"m3"):
            await admin.publish(settings.exchange, "doctor.events", body)
        await eventually(lambda: len(taken) == 3, what="the three good messages")
        assert taken == [b"m1", b"m2", b"m3"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Its connection closed, whatever it had not acked would be back in the queue: none
    # is (the bad one was rejected, not put back).
    assert (await admin.inspect_queue(settings.queue)).messages == 0
