"""The dispatcher's quiet (notifier/delivery.py `Dispatcher.quiet`): what would compete
with the owners for the CPU (setting a storm's servers to error) waits for their first
attempts, but not for a consumer that does not answer, and not past its deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opendoctor.core.notifications import OutboxEntry
from opendoctor.core.settings import NotifierSettings
from opendoctor.notifier.delivery import SETTLE, Dispatcher
from opendoctor.store.db import Database
from opendoctor.store.outbox import OutboxStore


class Held:
    """A sender whose callbacks end when the test says."""

    def __init__(self) -> None:
        self.release: dict[str, asyncio.Event] = {}

    async def send(self, entry: OutboxEntry) -> None:
        await self.release.setdefault(entry.url, asyncio.Event()).wait()

    def answer(self, url: str) -> None:
        self.release.setdefault(url, asyncio.Event()).set()


def entry(url: str) -> OutboxEntry:
    return OutboxEntry(id=url, alarm_id="a", url=url, body={}, created=time.time())


@pytest.fixture
async def dispatcher(tmp_path: Path) -> AsyncIterator[tuple[Dispatcher, Held]]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
    sender = Held()
    yield Dispatcher(OutboxStore(db), {"test": sender}, NotifierSettings()), sender
    await db.close()


async def test_quiet_once_the_first_attempts_have_ended(
    dispatcher: tuple[Dispatcher, Held],
) -> None:
    d, sender = dispatcher
    await asyncio.wait_for(d.quiet(time.monotonic() + 5), 1)  # nothing under way
    tasks = d.first_attempts([entry("test://one"), entry("test://two")])
    waiting = asyncio.create_task(d.quiet(time.monotonic() + 30))
    sender.answer("test://one")
    await asyncio.wait([tasks[0]])
    await asyncio.sleep(0)
    assert not waiting.done()  # the other is still under way
    sender.answer("test://two")
    await asyncio.wait([tasks[1]])
    ended = time.monotonic()
    await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - ended >= SETTLE * 0.9  # and settled


async def test_a_deadline_ends_the_wait(dispatcher: tuple[Dispatcher, Held]) -> None:
    d, sender = dispatcher
    d.first_attempts([entry("test://silent")])
    began = time.monotonic()
    await asyncio.wait_for(d.quiet(began + 0.2), 5)
    assert time.monotonic() - began >= 0.19
    sender.answer("test://silent")


async def test_an_attempt_the_notifier_stopped_waiting_for_does_not_count(
    dispatcher: tuple[Dispatcher, Held],
) -> None:
    d, sender = dispatcher
    tasks = d.first_attempts([entry("test://silent")])
    d.outlived(list(tasks))
    await asyncio.wait_for(d.quiet(time.monotonic() + 30), 5)
    sender.answer("test://silent")
    await asyncio.wait(tasks)
