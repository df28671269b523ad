"""RabbitMQ restarts in the middle of a storm: clients reconnect, nothing is lost."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from opendoctor.bus.amqp import AmqpBus
from opendoctor.core.model import Event
from opendoctor.infra.amqp import Broker
from opendoctor.notifier.amqp_sender import AmqpSender
from tests.conftest import eventually
from tests.integration.amqp.conftest import Names
from tests.integration.amqp.test_sender import action, bound_queue, entry
from tests.servers import need


async def rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)} failed:\n{out.decode()}"


@pytest.fixture
def restartable(amqp_url: str) -> None:
    if "127.0.0.1" not in amqp_url and "localhost" not in amqp_url:
        need("the broker is not on this machine: it cannot be restarted by the test")
    if shutil.which("rabbitmqctl") is None:
        need("rabbitmqctl is not on PATH: the broker cannot be restarted by the test")


def collapse(seqs: list[int]) -> list[int]:
    """At least once: a message whose confirm or ack was lost comes twice in a row."""
    return [s for i, s in enumerate(seqs) if i == 0 or seqs[i - 1] != s]


async def test_a_broker_restart_during_a_storm_loses_nothing(
    restartable: None,
    amqp_url: str,
    names: Names,
    admin: Broker,
    make_bus: Callable[..., AmqpBus],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="opendoctor.bus.amqp")
    bus = make_bus(names.bus_prefix(["events"], 4), partitions=4, publish_timeout=90)
    seen: dict[str, list[int]] = {}
    sent: dict[str, list[int]] = {}

    async def handle(e: Event) -> None:
        seen.setdefault(e.hostname, []).append(e.details["seq"])

    bus.subscribe("events", handle)
    await bus.ready()
    # The notifier's side: a sender with its connection open, and a consumer's queue.
    exchange = names.exchange()
    got = await bound_queue(admin, names, exchange)
    sender = AmqpSender(timeout=2.0)
    await sender.send(entry(action(amqp_url, exchange), 1))
    await asyncio.wait_for(got.get(), timeout=10)
    [connection] = sender._brokers.values()

    restarted = asyncio.Event()

    async def storm(host: str) -> None:
        # Publishes until well after the broker is back.
        seq, after = 0, 0
        while after < 20:
            event = Event("compute.host.down", host, "down", float(seq), details={"seq": seq})
            await bus.publish("events", event, key=host)
            sent.setdefault(host, []).append(seq)
            seq += 1
            if restarted.is_set():
                after += 1
            else:
                await asyncio.sleep(0)  # let the other hosts and the handlers run

    storms = asyncio.gather(*(storm(f"compute{i}") for i in range(10)))
    try:
        await eventually(lambda: sum(map(len, seen.values())) >= 100, what="the storm")
        try:
            await rabbitmqctl("stop_app")
        finally:
            await rabbitmqctl("start_app")
        restarted.set()
        await asyncio.wait_for(storms, timeout=120)
        await asyncio.wait_for(bus.drain(), timeout=120)
    finally:
        storms.cancel()
        await asyncio.gather(storms, return_exceptions=True)

    ours = [r for r in caplog.records if r.name == "opendoctor.bus.amqp"]
    assert any("trying again" in r.getMessage() for r in ours), "no publish hit the outage"
    assert {h: collapse(s) for h, s in seen.items()} == sent

    # The sender's connection came back by itself: the same one delivers again.
    async def delivered() -> Any:
        try:
            await sender.send(entry(action(amqp_url, exchange), 2))
        except Exception:
            return False
        return True

    try:
        # Routed, so the consumer's exclusive queue is back too (restored by its connection).
        await eventually(delivered, timeout=30, what="a delivery after the restart")
        assert list(sender._brokers.values()) == [connection]
        want = "req-00000000-0000-4000-8000-000000000002"
        while (await asyncio.wait_for(got.get(), timeout=10)).header(
            "x-openstack-request-id"
        ) != want:
            pass
    finally:
        await sender.close()
