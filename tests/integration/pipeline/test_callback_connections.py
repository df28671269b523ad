"""Callbacks over real sockets: signed as the consumer checks, and sent over a pool of
kept-alive connections that the next fault reuses (no handshake per callback)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from opendoctor.core.notifications import DELIVERED, OutboxEntry
from opendoctor.core.settings import NotifierSettings
from opendoctor.infra.http1 import Http1Client
from opendoctor.infra.procs import free_port
from opendoctor.notifier.delivery import Dispatcher, HttpSender
from opendoctor.notifier.notifier import _entry_id
from opendoctor.notifier.signer import ProjectSigner
from opendoctor.store.outbox import OutboxStore
from opendoctor.tools.consumer import RECEIVED, make_app

KEY = b"project-a-signing-key"
SLOTS = 4  # notifier.per_destination: the most connections to one consumer


class Consumer:
    """The sample consumer, checking signatures, noting which connection each callback
    came over (the client's port)."""

    def __init__(self) -> None:
        self.app = make_app(quiet=True, signing_key=KEY)
        self.app.on_response_prepare.append(self._note)
        self.ports: list[int] = []
        self.port = free_port()
        self.runner = web.AppRunner(self.app, access_log=None)

    async def _note(self, request: web.Request, _: web.StreamResponse) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.ports.append(peer[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/failure"


@pytest.fixture
async def consumer() -> AsyncIterator[Consumer]:
    c = Consumer()
    await c.runner.setup()
    await web.TCPSite(c.runner, "127.0.0.1", c.port).start()
    yield c
    await c.runner.cleanup()


def _entries(url: str, fault: str, n: int) -> list[OutboxEntry]:
    out = []
    for i in range(n):
        body = {"alarm_id": f"alarm-{i}", "current": "alarm", "reason_data": {"fault": fault}}
        out.append(
            OutboxEntry(
                id=_entry_id(fault, f"alarm-{i}", url),
                alarm_id=f"alarm-{i}",
                url=url,
                body=body,
                created=time.time(),
                payload=orjson.dumps(body),
            )
        )
    return out


async def test_signed_callbacks_reuse_the_pool_across_faults(consumer: Consumer) -> None:
    http = Http1Client(timeout=5.0, resend_unanswered=True)  # as the service's
    signer = ProjectSigner(lambda _: "project-a", {"project-a": KEY})
    settings = NotifierSettings(per_destination=SLOTS)
    outbox: OutboxStore = None  # type: ignore[assignment]  # first attempts only
    dispatcher = Dispatcher(outbox, {"http": HttpSender(http, 5.0, signer)}, settings)
    try:
        seen: list[set[int]] = []
        for fault in ("fault-1", "fault-2"):
            entries = _entries(consumer.url, fault, 30)
            for attempt in dispatcher.first_attempts(entries):
                await attempt
            # The consumer refuses (401) a callback whose signature does not hold.
            assert {e.status for e in entries} == {DELIVERED}, entries[0].last_error
            seen.append(set(consumer.ports))
            consumer.ports.clear()
        assert len(consumer.app[RECEIVED]) == 60
        assert 1 <= len(seen[0]) <= SLOTS
        # The second fault went over the connections the first opened.
        assert seen[1] <= seen[0]
    finally:
        await http.close()
