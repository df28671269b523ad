"""What the dispatcher does with an attempt whose sender fails in a way it did not plan."""

from __future__ import annotations

import time

from opendoctor.core.notifications import PENDING, OutboxEntry
from opendoctor.core.settings import NotifierSettings
from opendoctor.notifier.delivery import Dispatcher
from opendoctor.store.outbox import OutboxStore


class Broken:
    async def send(self, entry: OutboxEntry) -> None:
        raise RuntimeError("a bug in a sender")


async def test_a_sender_that_breaks_leaves_the_entry_to_be_tried_again() -> None:
    outbox: OutboxStore = None  # type: ignore[assignment]  # first attempts only
    dispatcher = Dispatcher(outbox, {"http": Broken()}, NotifierSettings())
    entry = OutboxEntry(
        id="n-1", alarm_id="a-1", url="http://192.0.2.1/failure", body={}, created=time.time()
    )
    [attempt] = dispatcher.first_attempts([entry])
    await attempt  # the task ends without an exception
    assert (entry.status, entry.attempts) == (PENDING, 1)
    assert entry.last_error == "RuntimeError: a bug in a sender"
    assert entry.next_attempt is not None and entry.next_attempt > time.time()
