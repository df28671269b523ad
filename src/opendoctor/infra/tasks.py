"""Background work a component starts and owns: kept referenced, cancelled when it closes,
the one retry loop for writes that must not be given up, and the one loop for work
done every so often."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Background:
    def __init__(self) -> None:
        # Referenced here: the event loop keeps only weak references to tasks.
        self._tasks: set[asyncio.Future[None]] = set()

    def spawn(self, work: Awaitable[None]) -> asyncio.Future[None]:
        """Run `work` in the background; returns its task, for whoever wants to await it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def keep_trying(action: Callable[[], Awaitable[None]], first: float, most: float) -> None:
    """Call `action` after `first` seconds, then again with doubling pauses (up to `most`)
    until it returns without raising."""
    delay = first
    while True:
        await asyncio.sleep(delay)
        try:
            await action()
        except Exception:
            delay = min(delay * 2, most)
            continue
        return


async def every(
    interval: float, work: Callable[[], Awaitable[None]], what: str, *, first: bool = False
) -> None:
    """Run `work` every `interval` seconds (at once too, with `first`), for good. A round
    that fails (the database away, say) is logged as a warning and the next one tries
    again: a periodic task must not end the service, nor end itself."""
    if not first:
        await asyncio.sleep(interval)
    while True:
        try:
            await work()
        except Exception as exc:
            log.warning("%s: not this time", what, extra={"error": str(exc)})
        await asyncio.sleep(interval)
