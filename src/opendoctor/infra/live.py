"""Live events: what changed a moment ago (a fault opened, a vertex's state, a session's
progress), handed in process to whoever watches (the dashboard's `GET /v1/stream`).

The blocks that change things publish where the change happens, and must never wait
for, or fail because of, someone watching: `Hub.publish` is synchronous, bounded and
never raises. Each subscriber has a queue of its own with a bound; one that falls behind
(a slow browser, a storm of changes) loses what it had not read and gets one `gap`
event in its place, which tells it to read the whole state again. Nothing is replayed:
a client that connects (or reconnects) reads the state first, then follows the changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any

log = logging.getLogger(__name__)

GAP = "gap"

# What publishers call: `Hub.publish`, or a stand-in that drops everything.
Publish = Callable[[str, dict[str, Any], str | None], None]
# Whether the subscriber may see an event of this project (None: the infrastructure's).
Allowed = Callable[[str | None], bool]


def nowhere(kind: str, data: dict[str, Any], project: str | None = None) -> None:
    """A `Publish` for blocks built without a hub (tests, tools)."""


class Unavailable(Exception):
    """No subscription now: try again later (a 503)."""


class HubFull(Unavailable):
    """As many subscribers as the hub takes are subscribed already."""


class HubClosed(Unavailable):
    """The hub was closed: the service is stopping."""


class Event:
    """One change: `id` grows with each event the hub hands out; `project` decides who
    may see it (None: admins only)."""

    __slots__ = ("_json", "data", "id", "kind", "project", "time")

    def __init__(
        self, id: int, kind: str, time: float, project: str | None, data: Mapping[str, Any]
    ) -> None:
        self.id = id
        self.kind = kind
        self.time = time
        self.project = project
        self.data = data
        self._json: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "time": self.time,
            "project": self.project,
            "data": dict(self.data),
        }

    def data_json(self) -> str:
        """The event's data as one line of JSON, made once for all the subscribers that
        get it. A value JSON cannot hold is written as its text rather than failing a
        stream."""
        if self._json is None:
            self._json = json.dumps(self.data, separators=(",", ":"), default=str)
        return self._json

    def __repr__(self) -> str:
        return f"Event({self.id}, {self.kind!r}, project={self.project!r}, data={self.data!r})"


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _wake(waiter: asyncio.Future[None]) -> None:
    """Wake a consumer waiting on its loop, from that loop or any other thread."""
    loop = waiter.get_loop()
    try:
        here = asyncio.get_running_loop() is loop
    except RuntimeError:
        here = False
    if here:
        _settle(waiter)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(_settle, waiter)


class Subscription:
    """The events one subscriber may see, in order, to one consumer at a time: iterate
    it (`async for`), or `get` with a timeout. Closing it (or cancelling the consumer
    while it waits) unsubscribes it."""

    def __init__(
        self, hub: Hub, allowed: Allowed, kinds: frozenset[str] | None, limit: int
    ) -> None:
        self._hub = hub
        self._allowed = allowed
        self._kinds = kinds
        self._limit = limit
        self._queue: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed_waiters: list[asyncio.Future[None]] = []
        self.closed = False
        self.gaps = 0  # times it fell behind

    def offer(self, event: Event) -> None:
        """Queue the event if this subscriber wants it and may see it (the hub's side)."""
        if self._kinds is not None and event.kind not in self._kinds:
            return
        if not self._allowed(event.project):
            return
        queue = self._queue
        if len(queue) >= self._limit:
            # Behind: what it has not read is stale anyway once it must reload, and
            # memory stays bounded whatever the rate of changes.
            dropped = len(queue)
            if queue[0].kind == GAP:  # behind again before it read the last gap
                dropped += queue[0].data["dropped"] - 1
            last = queue[-1].id
            queue.clear()
            queue.append(Event(last, GAP, time.time(), None, {"dropped": dropped}))
            self.gaps += 1
        queue.append(event)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            _wake(waiter)

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None if none came within `timeout` seconds, or the subscription
        is closed (`closed` tells which)."""
        if self._queue:
            return self._queue.popleft()
        if self.closed:
            return None
        if self._waiter is not None:
            raise RuntimeError("a subscription has one consumer at a time")
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # Not asyncio.wait_for: a timeout must not look like a consumer that went away.
        timer = None if timeout is None else loop.call_later(timeout, _settle, waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            self.close()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if self._waiter is waiter:
                self._waiter = None
        return self._queue.popleft() if self._queue else None

    def pending(self, most: int) -> list[Event]:
        """Up to `most` events that are here already, without waiting."""
        queue = self._queue
        return [queue.popleft() for _ in range(min(most, len(queue)))]

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        """Unsubscribe; a consumer waiting for the next event gets none (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._hub._drop(self)
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            _wake(waiter)
        for waiter in self._closed_waiters:
            _wake(waiter)
        self._closed_waiters.clear()

    async def wait_closed(self) -> None:
        """Until the subscription is closed, by its consumer or the hub."""
        if self.closed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._closed_waiters.append(waiter)
        await waiter

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Hub:
    """In-process publish/subscribe of small JSON-able events, bounded in every way: at
    most `max_subscribers` at once, at most `queue_limit` events waiting for each."""

    def __init__(self, max_subscribers: int = 200, queue_limit: int = 1000) -> None:
        if max_subscribers < 1 or queue_limit < 1:
            raise ValueError("a hub needs room for one subscriber and one event at least")
        self.max_subscribers = max_subscribers
        self.queue_limit = queue_limit
        # A tuple, replaced on (rare) subscribe and close: publishing walks it with no
        # copy, and a subscriber leaving meanwhile cannot upset the walk.
        self._subscribers: tuple[Subscription, ...] = ()
        self._last_id = 0
        self.closed = False
        self._closing = asyncio.Event()

    @property
    def subscribers(self) -> tuple[Subscription, ...]:
        return self._subscribers

    @property
    def listening(self) -> bool:
        """Whether anyone is subscribed: a publisher may skip building its event if not."""
        return bool(self._subscribers)

    def publish(self, kind: str, data: dict[str, Any], project: str | None = None) -> None:
        """Hand the event to every subscriber that may see it. Never blocks, never raises:
        it is called on the paths where faults are handled."""
        subscribers = self._subscribers
        if not subscribers:
            return
        self._last_id += 1
        event = Event(self._last_id, kind, time.time(), project, data)
        for subscriber in subscribers:
            try:
                subscriber.offer(event)
            except Exception:
                # A subscriber's filter failed: it misses this event, the others do not.
                log.exception("live event not offered", extra={"kind": kind})

    def subscribe(self, allowed: Allowed, kinds: Collection[str] | None = None) -> Subscription:
        """A subscription to the events whose project `allowed` accepts (`allowed(None)`
        for those of no project: the infrastructure's), of the `kinds` given (all if
        None); `HubFull` when the hub has `max_subscribers` already, `HubClosed` once it
        is closed."""
        if self.closed:
            raise HubClosed("the service is stopping")
        if len(self._subscribers) >= self.max_subscribers:
            raise HubFull(
                f"{len(self._subscribers)} live subscribers already, the most this service "
                "takes at once; try again later"
            )
        wanted = None if kinds is None else frozenset(kinds)
        subscription = Subscription(self, allowed, wanted, self.queue_limit)
        self._subscribers = (*self._subscribers, subscription)
        return subscription

    def _drop(self, subscription: Subscription) -> None:
        self._subscribers = tuple(s for s in self._subscribers if s is not subscription)

    def close(self) -> None:
        """End every subscription, and take no more: the service stops, and its server
        waits for every response (a stream too) to end before it stops the service."""
        self.closed = True
        self._closing.set()
        for subscription in self._subscribers:
            subscription.close()

    async def wait_closed(self) -> None:
        """Until the hub is closed: what else must end with the service's responses
        (streams that are no subscription of it) waits here."""
        await self._closing.wait()
