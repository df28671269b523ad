"""Tests against the real RabbitMQ (127.0.0.1:5672 unless OPENDOCTOR_TEST_AMQP_URL says
otherwise). Without a broker they skip, except in CI (CI=true), where they fail."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from opendoctor.bus.amqp import AmqpBus
from opendoctor.infra.amqp import Broker, parse_broker_url
from tests.integration.pipeline.conftest import consumer as consumer  # a fixture of these tests too
from tests.servers import in_ci, need

AMQP_URL = os.environ.get("OPENDOCTOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def answers(host: str, port: int, within: float) -> str | None:
    """None once the broker accepts connections, else why not after `within` seconds.
    (.ci/run starts RabbitMQ in the background: it may still be booting.)"""
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return None
        except OSError as exc:
            if time.monotonic() >= deadline:
                return str(exc)
        time.sleep(0.5)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    broker = parse_broker_url(AMQP_URL)
    problem = answers(broker.host, broker.port, within=60.0 if in_ci() else 2.0)
    if problem is not None:
        need(
            f"RabbitMQ is not reachable at {broker.safe} ({problem}); start it "
            "(`rabbitmq-server -detached`, as .ci/run does) or set OPENDOCTOR_TEST_AMQP_URL"
        )
    return AMQP_URL


@dataclass
class Names:
    """Unique names for one test, and what to delete after it."""

    tag: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:12]}")
    queues: list[str] = field(default_factory=list)
    exchanges: list[str] = field(default_factory=list)

    def exchange(self, what: str = "x") -> str:
        name = f"{self.tag}.{what}"
        self.exchanges.append(name)
        return name

    def queue(self, what: str = "q") -> str:
        name = f"{self.tag}.{what}"
        self.queues.append(name)
        return name

    def bus_prefix(self, topics: list[str], partitions: int) -> str:
        """A bus prefix whose exchanges and queues are deleted after the test."""
        for topic in topics:
            self.exchanges.append(f"{self.tag}.{topic}")
            self.queues.append(f"{self.tag}.{topic}.dead")
            self.queues += [f"{self.tag}.{topic}.{i}" for i in range(partitions)]
        return self.tag

    def events_bus(self, url: str, partitions: int, **more: object) -> dict[str, object]:
        """`bus` settings of a service whose events go over RabbitMQ, on this test's
        own exchange and queues."""
        prefix = self.bus_prefix(["events"], partitions)
        return {"kind": "amqp", "url": url, "prefix": prefix, "partitions": partitions, **more}


@pytest.fixture
async def admin(amqp_url: str) -> AsyncIterator[Broker]:
    """A connection of the test's own, for declaring, inspecting and cleaning up."""
    broker = Broker(amqp_url, name="opendoctor-tests")
    await broker.connect()
    yield broker
    await broker.close()


@pytest.fixture
async def names(amqp_url: str) -> AsyncIterator[Names]:
    made = Names()
    yield made
    cleaner = Broker(amqp_url, name="opendoctor-tests-cleanup")
    try:
        for queue in made.queues:
            await cleaner.delete_queue(queue)
        for exchange in made.exchanges:
            await cleaner.delete_exchange(exchange)
    finally:
        await cleaner.close()


@pytest.fixture
async def make_bus(amqp_url: str) -> AsyncIterator[Callable[..., AmqpBus]]:
    """AmqpBus instances, closed after the test."""
    made: list[AmqpBus] = []

    def make(prefix: str, **kw: object) -> AmqpBus:
        kw.setdefault("retry_delay", 0.05)
        kw.setdefault("reconnect_interval", 0.2)
        bus = AmqpBus(amqp_url, prefix=prefix, **kw)  # type: ignore[arg-type]
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()
