"""Order per key within one partition, while the partition's other keys go on.

A partition queue holds many hosts' messages. Handled one at a time, a storm's hundred
host faults queue behind each other eight at a time (one per partition), each holding
its partition while its owners are told: scaled-out mode was slower than embedded mode,
whose in-process bus runs different hosts side by side. So a partition is consumed
with a prefetch of several messages, and each message waits only for the earlier ones
that share a key with it (`KeyOrder.take`, in delivery order). A message whose keys are
not known (published by an older version) waits for everything before it, and
everything after it waits for it.

Acks then come out of order across keys, which RabbitMQ allows; within a key a message
is acked before the next one starts, so a redelivery after a crash still replays each
key's messages in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Turn:
    """A message's place in its partition: the earlier messages it waits for."""

    __slots__ = ("_before", "_done", "_order", "keys")

    def __init__(
        self,
        order: KeyOrder,
        keys: frozenset[str] | None,
        before: list[asyncio.Future[None]],
        done: asyncio.Future[None],
    ) -> None:
        self._order = order
        self.keys = keys
        self._before = before
        self._done = done

    async def ready(self) -> None:
        """Wait until every earlier message sharing a key with this one has left."""
        waiting = [f for f in self._before if not f.done()]
        if waiting:
            await asyncio.wait(waiting)

    def leave(self) -> None:
        """Let the messages waiting for this one go (handled, given up, or cancelled)."""
        if not self._done.done():
            self._done.set_result(None)
        self._order._left(self)


class KeyOrder:
    def __init__(self) -> None:
        # Per key, the latest message holding it; `_all`: the latest with unknown keys.
        self._last: dict[str, asyncio.Future[None]] = {}
        self._all: asyncio.Future[None] | None = None
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def take(self, keys: Iterable[str] | None) -> Turn:
        """A place behind the earlier messages of the same keys. Not a coroutine, on
        purpose: called as each delivery comes in, the places follow the queue's order."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        before: list[asyncio.Future[None]] = []
        if self._all is not None:
            before.append(self._all)
        if keys is None:
            before.extend(self._last.values())
            self._last.clear()
            self._all = done
            return Turn(self, None, before, done)
        chosen = frozenset(keys)
        for key in chosen:
            earlier = self._last.get(key)
            if earlier is not None:
                before.append(earlier)
            self._last[key] = done
        return Turn(self, chosen, before, done)

    def _left(self, turn: Turn) -> None:
        if turn.keys is None:
            if self._all is turn._done:
                self._all = None
            return
        for key in turn.keys:
            if self._last.get(key) is turn._done:
                del self._last[key]

    def running(self) -> _Running:
        """Count a message as being handled while the `with` block runs."""
        return _Running(self)

    async def idle(self) -> None:
        """Wait until no message is being handled (waiting ones are not counted)."""
        await self._idle.wait()


class _Running:
    __slots__ = ("_order",)

    def __init__(self, order: KeyOrder) -> None:
        self._order = order

    def __enter__(self) -> None:
        self._order._running += 1
        self._order._idle.clear()

    def __exit__(self, *_: object) -> None:
        self._order._running -= 1
        if self._order._running == 0:
            self._order._idle.set()
