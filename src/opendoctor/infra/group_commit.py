"""Group commit: what concurrent callers write, written together.

In a storm many faults are notified at once, and each used to write its outbox rows
and its alarms' transitions in transactions of its own: a hundred faults, two hundred
commits, each a round trip (PostgreSQL) or a turn of the one writer (SQLite). Here a
caller hands its part over and waits; whoever comes while a write is in flight joins
the next one. A caller alone is written at once (no timer, no added wait); under load
one transaction carries the parts of many callers.

Each caller still learns whether its own part was written: if a shared write fails,
each part is written again alone, so one caller's bad row does not fail the others'
(unless `alone` says the failure is not a part's doing: a database out of reach fails
them all at once). The notifier's outbox and the event journal both write this way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
Q = TypeVar("Q")


def take_upto(queue: list[Q], weigh: Callable[[Q], int], most: int) -> tuple[list[Q], list[Q]]:
    """The head of `queue` that weighs at most `most` (always one item at least), and
    the rest."""
    weight, taken = 0, 0
    for item in queue:
        weight += weigh(item)
        if taken and weight > most:
            break
        taken += 1
    return queue[:taken], queue[taken:]


class Closed(RuntimeError):
    """The writer was closed before this part was written."""


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its caller gave up (cancelled): nobody to tell
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class GroupCommit(Generic[T]):
    """`await commit.write(part)` returns once `part` was written (or raises why not).

    `write(parts)` writes several parts in one go (one transaction each store call);
    `size(part)` weighs a part (rows), and a batch holds at most `most` of them, or a
    single part however big it is.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[None]],
        size: Callable[[T], int],
        most: int = 5000,
        alone: Callable[[Exception], bool] = lambda _: True,
    ) -> None:
        self._write = write
        self._size = size
        self._most = most
        self._alone = alone
        self._queue: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # writes done, shared or not (the tests read it)

    async def write(self, part: T) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((part, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="group-commit")
        await future

    def _take(self) -> list[tuple[T, asyncio.Future[None]]]:
        batch, self._queue = take_upto(self._queue, lambda q: self._size(q[0]), self._most)
        return batch

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[None]]] = []
        try:
            while self._queue:
                batch = self._take()
                await self._one(batch)
                batch = []
        except BaseException:
            # Cancelled (closing): whoever still waits must not wait forever.
            for _, future in batch + self._queue:
                _settle(future, Closed("closed before the write"))
            self._queue = []
            raise

    async def _one(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        self.batches += 1
        try:
            await self._write([part for part, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or not self._alone(exc):
                for _, future in batch:
                    _settle(future, exc)
                return
            # One part may be what failed: each alone, so the others still land.
            for part, future in batch:
                self.batches += 1
                try:
                    await self._write([part])
                except Exception as alone:
                    _settle(future, alone)
                else:
                    _settle(future, None)
            return
        for _, future in batch:
            _settle(future, None)

    async def close(self, wait: float = 5.0) -> None:
        """Let the writes under way end (up to `wait` seconds), then stop."""
        writer, self._writer = self._writer, None
        if writer is None or writer.done():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(writer), wait)
        if not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
