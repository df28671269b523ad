"""AMQP alarm actions: the same callback as over HTTP, confirmed by the broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
import pytest
from aiohttp import web

from opendoctor.core.notifications import DELIVERED, PENDING, OutboxEntry
from opendoctor.core.ports import DeliveryError
from opendoctor.core.settings import NotifierSettings
from opendoctor.infra.amqp import Broker, Delivery
from opendoctor.infra.httpclient import HttpClient
from opendoctor.notifier.amqp_sender import AmqpSender
from opendoctor.notifier.delivery import Dispatcher, HttpSender
from opendoctor.store.outbox import OutboxStore
from tests.integration.amqp.conftest import Names
from tests.integration.pipeline.conftest import free_port

BODY: dict[str, Any] = {
    "alarm_name": "vm-failure",
    "alarm_id": "b2b3c1c0-0000-4000-8000-000000000001",
    "severity": "critical",
    "previous": "insufficient data",
    "current": "alarm",
    "reason": "Event <id=1,event_type=compute.instance.update> hits the query of alarm vm-failure.",
    "reason_data": {
        "type": "event",
        "event": {
            "message_id": "1",
            "event_type": "compute.instance.update",
            "generated": "2026-01-01T00:00:00.000000",
            "traits": [["instance_id", 1, "vm-1"], ["state", 1, "error"], ["host", 1, "c1"]],
        },
        "root_cause": {"type": "host", "id": "c1"},
    },
}


def action(amqp_url: str, exchange: str, routing_key: str = "alarm.project-a") -> str:
    base = amqp_url.rstrip("/")
    return f"{base}/?exchange={exchange}&routing_key={routing_key}"


def entry(url: str, n: int = 1, payload: bool = True) -> OutboxEntry:
    return OutboxEntry(
        id=f"00000000-0000-4000-8000-{n:012d}",
        alarm_id=BODY["alarm_id"],
        url=url,
        body=BODY,
        created=time.time(),
        payload=orjson.dumps(BODY) if payload else b"",
    )


async def bound_queue(
    admin: Broker, names: Names, exchange: str, key: str = "alarm.#"
) -> asyncio.Queue[Delivery]:
    """A consumer's queue on the exchange, and what arrives on it."""
    await admin.declare_exchange(exchange, "topic")
    # Exclusive: it goes away with the test's connection.
    queue = await admin.declare_queue(
        f"{names.tag}.consumer", durable=False, exclusive=True, bind=[(exchange, key)]
    )
    got: asyncio.Queue[Delivery] = asyncio.Queue()

    async def keep(d: Delivery) -> None:
        await got.put(d)
        await d.ack()

    await admin.consume(queue, keep)
    return got


async def test_the_message_is_exactly_what_the_http_sender_posts(
    amqp_url: str, admin: Broker, names: Names
) -> None:
    exchange = names.exchange()
    got = await bound_queue(admin, names, exchange)
    posted: list[tuple[bytes, dict[str, str]]] = []

    async def capture(request: web.Request) -> web.Response:
        posted.append((await request.read(), dict(request.headers)))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/failure", capture)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    http = HttpClient(timeout=2.0)
    sender = AmqpSender(timeout=2.0)
    try:
        for payload in (True, False):  # the encoded body cached on the entry, or not
            posted.clear()
            await HttpSender(http, 2.0).send(entry(f"http://127.0.0.1:{port}/failure", 7, payload))
            await sender.send(entry(action(amqp_url, exchange), 7, payload))
            message = await asyncio.wait_for(got.get(), timeout=10)
            [(http_body, http_headers)] = posted
            assert message.body == http_body == orjson.dumps(BODY)
            request_id = "req-00000000-0000-4000-8000-000000000007"
            assert message.header("x-openstack-request-id") == request_id
            assert http_headers["x-openstack-request-id"] == request_id
            assert message.content_type == "application/json"
            assert message.persistent
            assert (message.exchange, message.routing_key) == (exchange, "alarm.project-a")
    finally:
        await sender.close()
        await http.close()
        await runner.cleanup()


async def test_one_connection_per_broker_and_the_exchange_is_declared_if_missing(
    amqp_url: str, admin: Broker, names: Names
) -> None:
    exchange = names.exchange()
    sender = AmqpSender(timeout=2.0)
    try:
        # Nobody declared the exchange yet: the sender does, then finds no queue bound.
        with pytest.raises(DeliveryError, match="no queue is bound") as info:
            await sender.send(entry(action(amqp_url, exchange)))
        assert info.value.retry  # a consumer may bind later: the outbox tries again
        got = await bound_queue(admin, names, exchange)
        await asyncio.gather(
            *(sender.send(entry(action(amqp_url, exchange), n)) for n in range(20))
        )
        ids = {(await got.get()).header("x-openstack-request-id") for _ in range(20)}
        assert len(ids) == 20
        assert len(sender._brokers) == 1
    finally:
        await sender.close()


async def test_an_unreachable_broker_is_a_retryable_delivery_error() -> None:
    sender = AmqpSender(timeout=1.0)
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/?exchange=x&routing_key=k"
    try:
        with pytest.raises(DeliveryError, match="connecting") as info:
            await sender.send(entry(url))
        assert info.value.retry
        assert not sender._brokers  # nothing half-open is kept
    finally:
        await sender.close()


async def test_a_broker_that_does_not_answer_is_a_retryable_delivery_error() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts the connection and never speaks AMQP

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = AmqpSender(timeout=0.5)
    try:
        with pytest.raises(DeliveryError, match="no answer from the broker in time") as info:
            await sender.send(entry(f"amqp://127.0.0.1:{port}/?exchange=x&routing_key=k"))
        assert info.value.retry
        assert not sender._brokers
    finally:
        await sender.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_bad_credentials_are_final(amqp_url: str) -> None:
    parts = urlsplit(amqp_url)
    url = f"amqp://nobody:wrong@{parts.hostname}:{parts.port or 5672}/?exchange=x&routing_key=k"
    sender = AmqpSender(timeout=2.0)
    try:
        with pytest.raises(DeliveryError, match="access refused") as info:
            await sender.send(entry(url))
        assert not info.value.retry
        assert "wrong" not in str(info.value)  # the password stays out of errors and logs
    finally:
        await sender.close()


async def test_the_outbox_retries_until_the_broker_takes_the_message(
    amqp_url: str, admin: Broker, names: Names
) -> None:
    exchange = names.exchange()
    sender = AmqpSender(timeout=2.0)
    settings = NotifierSettings(backoff_initial=0.05, backoff_max=0.1)
    outbox = cast(OutboxStore, None)  # first attempts do not touch the store
    dispatcher = Dispatcher(outbox, {"amqp": sender, "amqps": sender}, settings)
    try:
        e = entry(action(amqp_url, exchange))
        await asyncio.gather(*dispatcher.first_attempts([e]))
        assert e.status == PENDING and e.attempts == 1
        assert "no queue is bound" in (e.last_error or "")
        got = await bound_queue(admin, names, exchange)
        await asyncio.gather(*dispatcher.first_attempts([e]))  # the retry loop's next attempt
        assert e.status == DELIVERED and e.last_error is None
        assert (await asyncio.wait_for(got.get(), timeout=10)).body == orjson.dumps(BODY)
        bad = entry(action(amqp_url, "amq.topic"), 2)
        await asyncio.gather(*dispatcher.first_attempts([bad]))
        assert bad.status == "failed" and "reserved" in (bad.last_error or "")
    finally:
        await sender.close()
