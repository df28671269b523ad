"""Accepting events: stored, then handed to the bus, from the service's loop or the front's.

Nobody is told "accepted" about an event a restart could lose, and nothing is handled that
was not stored: if the write fails, `submit` raises (the API answers 503, the sender
retries) and nothing of the events is kept or handled. Concurrent calls share the write
(group commit): a storm's requests cost a few transactions, not one each.

From the service's loop, events are written to the journal, then published. The front
loop (app/front.py) takes events in on a thread of its own. With SQLite and the in-process
bus it keeps them in the spool (store/event_spool.py), a file nobody else writes, and
hands them to the service's loop in one call that nothing waits for; there they are
published, then recorded in the journal and dropped from the spool. So an event is
accepted without a turn of the loop, nor a lock of the file, that a storm's delivery
keeps busy. Otherwise (PostgreSQL, a broker: clients that belong to the service's loop)
the front loop waits for the service's loop to write and publish them. A front process
(app/front_process.py) writes the spool itself and hands the events over its control
channel (`taken_in`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from opendoctor.bus import InProcessBus
from opendoctor.core.model import Event
from opendoctor.core.ports import Bus
from opendoctor.infra import metrics
from opendoctor.infra.loops import on
from opendoctor.store.event_spool import EventSpool
from opendoctor.store.pipeline import EventStore

log = logging.getLogger(__name__)

EVENTS_TOPIC = "events"


class Intake:
    def __init__(self, events: EventStore, bus: Bus) -> None:
        self.events = events
        self.bus = bus
        self._home: asyncio.AbstractEventLoop | None = None
        self._recording: set[asyncio.Task[None]] = set()
        # Ids handed to the bus, not yet dropped from the spool.
        self._handed: set[str] = set()

    @property
    def spooled(self) -> bool:
        """Whether accepted events are kept in the spool and handed over without waiting
        (SQLite and the in-process bus): what a front process needs."""
        return self.events.spool is not None and isinstance(self.bus, InProcessBus)

    @property
    def direct(self) -> bool:
        """Whether another process may accept events by writing the journal and publishing
        them itself (a server database and a broker, scaled-out mode): what a front
        process needs there."""
        return not isinstance(self.bus, InProcessBus) and self.events.db.sqlite_file is None

    async def start(self) -> None:
        """The calling loop is the service's. Events the spool still holds (the process
        ended before the journal had them) go to the journal first, so that `replay`
        finds them."""
        self._home = asyncio.get_running_loop()
        spool = self.events.spool
        if spool is not None and (held := await spool.held()):
            await self.events.add(held)
            await spool.drop([e.id for e in held])

    async def replay(self) -> None:
        """Hand the journal's unhandled events to the bus again: they were accepted, but
        may never have reached it (handling an event twice changes nothing)."""
        replay = await self.events.unprocessed()
        for event in replay:
            log.info("replaying an event accepted before a restart", extra={"event": event.id})
        if replay:
            await self.bus.publish_many(EVENTS_TOPIC, [(e.hostname, e) for e in replay])

    async def submit(self, events: list[Event]) -> None:
        """Accept events: durable when this returns, and handed to the bus (in order within
        a host; on a broker, one message per partition)."""
        home = self._home
        spool = self.events.spool
        # Shielded: a caller that goes away must not leave stored events unpublished
        # (they would wait for a restart's replay).
        if home is None or asyncio.get_running_loop() is home:
            await asyncio.shield(self._accept(events))
        elif spool is not None and isinstance(self.bus, InProcessBus):
            await asyncio.shield(self._spooled(events, spool, home, self.bus))
        else:
            await on(home, _shielded(self._accept(events)))
        _count_accepted(events)

    async def _accept(self, events: list[Event]) -> None:
        await self.events.add(events)
        await self.bus.publish_many(EVENTS_TOPIC, [(e.hostname, e) for e in events])

    async def _spooled(
        self,
        events: list[Event],
        spool: EventSpool,
        home: asyncio.AbstractEventLoop,
        bus: InProcessBus,
    ) -> None:
        await spool.add(events)
        # One callback, after every earlier one: a host's events reach the bus in the
        # order they were accepted.
        home.call_soon_threadsafe(self._arrived, events, spool, bus)

    def taken_in(self, events: list[Event]) -> None:
        """Events the front process (app/front_process.py) accepted: already in the spool,
        handed to the bus now. On this loop, in the order they were accepted."""
        spool = self.events.spool
        assert spool is not None and isinstance(self.bus, InProcessBus)
        self._arrived(events, spool, self.bus)
        _count_accepted(events)

    async def take_missed(self) -> None:
        """Take in what a front process accepted but did not pass on before it ended:
        what the spool holds that never reached this process; where the front writes the
        journal and publishes itself (`direct`), the journal's unhandled events are
        published again (one written, not yet published, would wait for a restart)."""
        spool = self.events.spool
        if spool is None:
            if self.direct:
                await self.replay()
            return
        missed = [e for e in await spool.held() if e.id not in self._handed]
        if missed:
            log.warning(
                "events a front process accepted, taken from the spool",
                extra={"events": len(missed)},
            )
            self.taken_in(missed)

    def _arrived(self, events: list[Event], spool: EventSpool, bus: InProcessBus) -> None:
        self._handed.update(e.id for e in events)
        for event in events:
            bus.publish_nowait(EVENTS_TOPIC, event, event.hostname)
        task = asyncio.create_task(self._record(events, spool), name="intake:record")
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, events: list[Event], spool: EventSpool) -> None:
        try:
            await self.events.add(events)
            await spool.drop([e.id for e in events])
            self._handed.difference_update(e.id for e in events)
        except Exception as exc:
            # Handled all the same; the spool keeps them until the next start.
            log.warning(
                "accepted events not yet in the journal",
                extra={"events": len(events), "error": str(exc)},
            )

    async def stop(self) -> None:
        """Let the journal's records under way end."""
        await asyncio.gather(*self._recording, return_exceptions=True)


async def _shielded(accept: Coroutine[Any, Any, None]) -> None:
    await asyncio.shield(accept)


def _count_accepted(events: list[Event]) -> None:
    # Once per type, not per event: a label lookup costs more than the rest of taking an
    # event in, and a storm's batches are all of one or two types.
    for kind, count in Counter(e.type for e in events).items():
        metrics.event_outcome(kind, "accepted").inc(count)
