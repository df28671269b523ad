"""Group read: what concurrent callers ask about, asked in one query.

The reading twin of `group_commit`. The scaled-out inspector asks the store, for each
batch of events it takes from the bus, which were handled before and which of their
resources have an active fault; with many hosts handled side by side that was two
queries per batch, each a round trip and the statement's whole cost in CPU. Here a
caller hands its keys over and waits; whoever comes while a query is in flight joins
the next one, so every answer comes from a query that started after its caller asked.
A caller alone is asked for at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Hashable
from typing import Generic, TypeVar

from opendoctor.infra.group_commit import take_upto

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class GroupRead(Generic[K, V]):
    """`await reader.read(keys)`: `fetch(keys)`'s answer for these keys (those it
    left out are left out here too), with at most `most` keys per query, or one
    caller's however many."""

    def __init__(self, fetch: Callable[[set[K]], Awaitable[dict[K, V]]], most: int = 5000):
        self._fetch = fetch
        self._most = most
        self._queue: list[tuple[frozenset[K], asyncio.Future[dict[K, V]]]] = []
        self._reader: asyncio.Task[None] | None = None
        self.queries = 0  # made so far (the tests read it)

    async def read(self, keys: Collection[K]) -> dict[K, V]:
        wanted = frozenset(keys)
        if not wanted:
            return {}
        future: asyncio.Future[dict[K, V]] = asyncio.get_running_loop().create_future()
        self._queue.append((wanted, future))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._drain(), name="group-read")
        return await future

    def _take(self) -> list[tuple[frozenset[K], asyncio.Future[dict[K, V]]]]:
        batch, self._queue = take_upto(self._queue, lambda q: len(q[0]), self._most)
        return batch

    async def _drain(self) -> None:
        batch: list[tuple[frozenset[K], asyncio.Future[dict[K, V]]]] = []
        try:
            while self._queue:
                batch = self._take()
                self.queries += 1
                try:
                    found = await self._fetch(set().union(*(keys for keys, _ in batch)))
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for keys, future in batch:
                        if not future.done():
                            future.set_result({k: found[k] for k in keys if k in found})
                batch = []
        except BaseException:
            # Cancelled: whoever still waits must not wait forever.
            for _, future in batch + self._queue:
                if not future.done():
                    future.cancel()
            self._queue = []
            raise
