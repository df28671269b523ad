"""Keeping the garbage collector's full walks off the hot path.

The service keeps its standing state in memory: the topology, its graph, the alarms and
their index, millions of objects for ten thousand VMs. CPython's full (generation 2)
collection walks every one of them each time the objects that survived since the last
one reach a quarter of the rest, and a storm makes that many. `bench storm` (100 hosts x
100 VMs) measured six full collections of up to 0.2 s in the 3 s of its delivery: a
quarter of the service's CPU, spent while owners waited.

So what has lived through a full collection is frozen (`gc.freeze`): the collector no
longer walks it, while reference counting frees it as ever once nothing holds it. After
each full collection the collector ran on its own (a `gc.callbacks` hook notes it), the
young generations are collected and everything left is frozen; the next full walk covers
only what is newer. `settle()` does the same once the service has loaded.

What is frozen and later becomes garbage in a cycle (an exception and its traceback,
say) stays until it is thawed: every `THAW_QUIET` seconds when the process is quiet (under
`QUIET_CPU` of a core over the last tick), and every `THAW_ANYWAY` seconds whatever it is
doing. Thawing costs one full walk, made at once (`settle`), not left to the collector's
next turn, which may come in a storm.

Freezing after the collector's own full walks was not enough: a storm's objects (outbox
entries, their bodies, the tasks sending them) live a second or two, long enough to reach
the oldest generation, so CPython walked them again and again: 8 full collections in the
3 s of `bench storm`'s delivery, up to 120 ms each, 0.36 s of the loop's time. So while
the keeper runs, the collector considers a full walk after `FULL_AFTER` collections of
the middle generation instead of 10 (one in that storm), and the keeper makes the walk
itself when the process is quiet: what survived since is collected and frozen then, and
the next storm starts with an empty oldest generation.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

TICK = 1.0  # seconds between looks
QUIET_CPU = 0.2  # share of a core under which the process counts as quiet
THAW_QUIET = 600.0
THAW_ANYWAY = 3600.0
FULL_AFTER = 100  # middle-generation collections before a full one is considered


class HeapKeeper:
    """Freezes what survives full collections; thaws now and then. One per process."""

    def __init__(self, thaw_quiet: float = THAW_QUIET, thaw_anyway: float = THAW_ANYWAY) -> None:
        self.thaw_quiet = thaw_quiet
        self.thaw_anyway = thaw_anyway
        self.freezes = 0
        self.thaws = 0
        self._full_walk = False
        self._thawed = time.monotonic()
        self._cpu = (time.monotonic(), time.process_time())
        self._task: asyncio.Task[None] | None = None
        self._thresholds: tuple[int, int, int] | None = None

    def _noted(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector, in whichever thread set it off: only a note here.
        if phase == "stop" and info["generation"] == 2:
            self._full_walk = True

    def settle(self) -> None:
        """Collect everything, then freeze what is left: the state just loaded."""
        gc.collect()
        self._full_walk = False  # that walk was this one: all it left is frozen below
        self._freeze()

    def _freeze(self) -> None:
        gc.freeze()
        self.freezes += 1

    def tick(self, now: float | None = None) -> str | None:
        """One look: what it did ("thawed", "froze", "settled") or None."""
        now = time.monotonic() if now is None else now
        cpu = time.process_time()
        then, cpu_then = self._cpu
        self._cpu = (now, cpu)
        quiet = (cpu - cpu_then) / max(now - then, 1e-6) < QUIET_CPU
        since = now - self._thawed
        if since >= self.thaw_anyway or (since >= self.thaw_quiet and quiet):
            gc.unfreeze()
            self.settle()  # the full walk that frees what was frozen, now
            self._thawed = now
            self.thaws += 1
            return "thawed"
        if self._full_walk:
            self._full_walk = False
            gc.collect(1)  # young garbage goes first, so only what lives is frozen
            self._freeze()
            return "froze"
        if quiet and gc.get_count()[2] > 0:
            # Objects reached the oldest generation since its last walk: walk it while
            # nothing waits, and freeze what lives.
            self.settle()
            return "settled"
        return None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.tick()

    def start(self) -> None:
        gc.callbacks.append(self._noted)
        young, middle, _ = self._thresholds = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_AFTER)
        self.settle()
        self._task = asyncio.create_task(self._run(), name="heap keeper")

    async def stop(self) -> None:
        if self._noted in gc.callbacks:
            gc.callbacks.remove(self._noted)
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
