"""The in-process bus of embedded mode: one worker task per (topic, key), created on demand."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from opendoctor.core.ports import Handler

log = logging.getLogger(__name__)


class InProcessBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._queues: dict[tuple[str, str], asyncio.Queue[Any]] = {}
        self._workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._handlers.setdefault(topic, []).append(handler)

    async def publish(self, topic: str, message: Any, key: str = "") -> None:
        slot = (topic, key)
        queue = self._queues.get(slot)
        if queue is None:
            queue = self._queues[slot] = asyncio.Queue()
            worker = self._work(topic, queue, slot)
            self._workers[slot] = asyncio.create_task(worker, name=f"bus:{topic}:{key}")
        self._pending += 1
        self._idle.clear()
        queue.put_nowait(message)

    async def _work(self, topic: str, queue: asyncio.Queue[Any], slot: tuple[str, str]) -> None:
        # The worker lives while its key has work, so idle hosts cost nothing. Between the
        # emptiness check and the removal there is no await, so no message can slip in.
        while not queue.empty():
            message = queue.get_nowait()
            try:
                for handler in self._handlers.get(topic, ()):
                    try:
                        await handler(message)
                    except Exception:
                        # One bad message must not stop the worker of its key.
                        log.exception("handler failed", extra={"topic": topic})
            finally:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()
        del self._queues[slot]
        del self._workers[slot]

    async def drain(self) -> None:
        await self._idle.wait()

    async def close(self) -> None:
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._queues.clear()
