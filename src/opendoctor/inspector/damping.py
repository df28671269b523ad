"""Flap damping: a resource that comes back is not believed at once.

When the last signal of a fault goes, the fault is held, not cleared: it clears once
the resource has stayed up for the hold-down. A resource that goes down again in that
time (a flap) keeps the fault it had: its owners were told, its host is still fenced,
and nothing is done twice. Each flap doubles the next hold-down, up to a ceiling; a
resource whose fault cleared a short while ago starts its next fault where it left off,
so that one flapping slower than the hold-down is damped all the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opendoctor.core.faults import Fault

log = logging.getLogger(__name__)

Key = tuple[str, str]
Clear = Callable[[], Awaitable[None]]

# Past this many remembered resources, those whose memory has run out are dropped.
_RECENT_PRUNE = 1024


@dataclass(slots=True)
class _Hold:
    task: asyncio.Task[None]
    clearing: bool = False


class Damping:
    def __init__(
        self, hold_down: float, ceiling: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self.hold_down = hold_down
        self.ceiling = max(ceiling, hold_down)
        self._holds: dict[Key, _Hold] = {}
        # Resource -> (when its last fault cleared, how often that fault flapped).
        self._recent: dict[Key, tuple[float, int]] = {}

    def delay(self, fault: Fault) -> float:
        """How long the resource must stay up before the fault clears (0: at once)."""
        if self.hold_down <= 0:
            return 0.0
        return float(min(self.hold_down * 2**fault.flaps, self.ceiling))

    def opened(self, fault: Fault) -> None:
        """A new fault: if the resource's previous one cleared within the ceiling, this
        one counts as its next flap."""
        recent = self._recent.pop(fault.key, None)
        if recent is not None and self.clock() - recent[0] < self.ceiling:
            fault.flaps = recent[1] + 1

    def holding(self, key: Key) -> bool:
        return key in self._holds

    def hold(self, fault: Fault, delay: float, clear: Clear) -> None:
        """Clear the fault with `clear` after `delay` seconds, unless it flaps first."""
        fault.held_until = self.clock() + delay
        key = fault.key
        task = asyncio.create_task(self._expire(key, delay, clear), name=f"hold-{fault.id}")
        self._holds[key] = _Hold(task)

    async def settle(self, key: Key, down: bool) -> None:
        """Before an event about `key` is handled: one saying it is down again ends the
        hold; a clearance already under way finishes first, whatever the event says."""
        hold = self._holds.get(key)
        if hold is None:
            return
        if hold.clearing:
            await asyncio.shield(hold.task)
        elif down:
            hold.task.cancel()
            del self._holds[key]

    def drop(self, key: Key) -> None:
        """Forget a hold: the fault was cleared elsewhere (by another replica)."""
        hold = self._holds.pop(key, None)
        if hold is not None and not hold.clearing:
            hold.task.cancel()

    def cleared(self, fault: Fault) -> None:
        """Remember the fault's flaps for the resource's next one."""
        if self.hold_down <= 0:
            return
        now = self.clock()
        if len(self._recent) >= _RECENT_PRUNE:
            stale = [k for k, (at, _) in self._recent.items() if now - at >= self.ceiling]
            for k in stale:
                del self._recent[k]
        self._recent[fault.key] = (now, fault.flaps)

    async def _expire(self, key: Key, delay: float, clear: Clear) -> None:
        await asyncio.sleep(delay)
        hold = self._holds[key]
        hold.clearing = True
        try:
            await clear()
        except Exception:
            # The fault stays held and active: the next report about the resource, or
            # the operator, decides. A clearance that failed must not end the service.
            log.exception("held fault not cleared", extra={"key": "/".join(key)})
        finally:
            self._holds.pop(key, None)

    async def close(self) -> None:
        holds = list(self._holds.values())
        self._holds.clear()
        for hold in holds:
            hold.task.cancel()
        await asyncio.gather(*(h.task for h in holds), return_exceptions=True)
