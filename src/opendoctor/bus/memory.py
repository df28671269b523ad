"""The in-process bus of embedded mode: per-key order, a bounded pool of workers per topic.

Each (topic, key) has a queue of its own. A key with messages waits in its topic's ready
line; up to `workers` workers take keys from that line, handle one message of each, and
put the key back at the end of the line if it has more. A key is never in the line twice
nor in the line while a worker holds it, so its messages are handled one at a time, in
the order they were published; different keys take turns.

Why bounded: a storm fails a hundred hosts at once. One worker per key ran a hundred
fault handlers side by side, each fanning out its owners' callbacks, and every other
coroutine of the process (the API accepting the next events) waited behind thousands of
ready callbacks. A bounded number keeps the loop answering; too few would slow the
delivery, since a handler holds its worker while its owners' first attempts run
(`bus.workers`). Workers exist only while their topic has work, so idle keys cost
nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from opendoctor.core.ports import BatchHandler, Handler

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 128
Slot = tuple[str, str]


class InProcessBus:
    def __init__(self, workers: int = DEFAULT_WORKERS) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._handlers: dict[str, list[Handler]] = {}
        self._queues: dict[Slot, deque[Any]] = {}  # keys with messages (held or waiting)
        self._ready: dict[str, deque[Slot]] = {}  # per topic: keys waiting for a worker
        self._busy: dict[str, int] = {}  # per topic: workers at work
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._handlers.setdefault(topic, []).append(handler)

    def subscribe_many(self, topic: str, handler: BatchHandler) -> None:
        # Messages are handed over one by one here: there is no batch to gain from.
        async def one(message: Any) -> None:
            await handler([message])

        self.subscribe(topic, one)

    async def publish(self, topic: str, message: Any, key: str = "") -> None:
        self.publish_nowait(topic, message, key)

    def publish_nowait(self, topic: str, message: Any, key: str = "") -> None:
        """`publish` as a plain call: what another thread hands over through
        `call_soon_threadsafe` is queued in the order it was handed."""
        slot = (topic, key)
        self._pending += 1
        self._idle.clear()
        queue = self._queues.get(slot)
        if queue is not None:
            # Waiting in line or held by a worker: it comes round to this message.
            queue.append(message)
            return
        self._queues[slot] = deque((message,))
        self._ready.setdefault(topic, deque()).append(slot)
        busy = self._busy.get(topic, 0)
        if busy < self.workers:
            self._busy[topic] = busy + 1
            task = asyncio.create_task(self._work(topic), name=f"bus:{topic}:{busy}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def publish_many(self, topic: str, items: Sequence[tuple[str, Any]]) -> None:
        for key, message in items:
            await self.publish(topic, message, key)

    async def _work(self, topic: str) -> None:
        try:
            await self._turns(topic)
        finally:
            # Counted off before the task ends (not in a done callback): a publish right
            # after the last turn must find room for a new worker.
            self._busy[topic] -= 1

    async def _turns(self, topic: str) -> None:
        ready = self._ready[topic]
        while ready:
            slot = ready.popleft()
            queue = self._queues[slot]
            message = queue[0]
            try:
                for handler in self._handlers.get(topic, ()):
                    try:
                        await handler(message)
                    except Exception:
                        # One bad message must not stop its key, nor the worker.
                        log.exception("handler failed", extra={"topic": topic})
            finally:
                queue.popleft()
                # No await between the emptiness check and the key's removal: a message
                # published meanwhile would find its key gone and wait for nobody.
                if queue:
                    ready.append(slot)
                else:
                    del self._queues[slot]
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()
            # A turn for everything else ready on the loop (the API) between messages.
            await asyncio.sleep(0)

    async def drain(self) -> None:
        await self._idle.wait()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._busy.clear()  # a task cancelled before its first step never counted off
        self._queues.clear()
        self._ready.clear()
