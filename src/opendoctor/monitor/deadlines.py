"""When a heartbeat probe counts as missed: the rounds' send times, and each path's
deadline learnt from its answer times.

A probe is missed once its answer is overdue, not because the next round went out:
at a 10 ms beat, one answer 11 ms late (a busy host, a scheduler hiccup) is a slow
answer, not a lost one. Each path keeps a smoothed answer time and its deviation, as
TCP keeps them for its retransmission timeout (RFC 6298), and gives each probe
`srtt + 4 * rttvar` to come back, clamped: never less than half an interval (what
loopback jitter on a loaded machine needs), never more than ten (a dead host must
still be found in a bounded time, however slow its path was).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# RFC 6298's gains and deviation factor.
_ALPHA = 1 / 8
_BETA = 1 / 4
_K = 4
# The deadline's clamp, in probe intervals.
FLOOR_INTERVALS = 0.5
CEILING_INTERVALS = 10.0


@dataclass(frozen=True, slots=True)
class Clamp:
    """The range a path's deadline stays in, in seconds."""

    floor: float
    ceiling: float

    @classmethod
    def for_interval(cls, interval: float) -> Clamp:
        return cls(FLOOR_INTERVALS * interval, CEILING_INTERVALS * interval)


@dataclass(slots=True)
class AnswerTimes:
    """One path's answer times: smoothed, with their mean deviation (seconds)."""

    srtt: float | None = None  # None: no answer timed yet
    rttvar: float = 0.0

    def sample(self, rtt: float) -> None:
        rtt = max(0.0, rtt)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
            return
        self.rttvar += _BETA * (abs(self.srtt - rtt) - self.rttvar)
        self.srtt += _ALPHA * (rtt - self.srtt)

    def deadline(self, clamp: Clamp) -> float:
        """How long a probe on this path may go unanswered before it counts as missed.
        A path not timed yet gets the ceiling (as TCP starts at its largest timeout)."""
        if self.srtt is None:
            return clamp.ceiling
        return min(clamp.ceiling, max(clamp.floor, self.srtt + _K * self.rttvar))


class Rounds:
    """When each recent probe round went out (the prober's clock), by sequence number.

    Sequence numbers follow one another: round `seq` is the n-th after `start`. The
    oldest are forgotten past `keep`, which must span more than a deadline's ceiling."""

    def __init__(self, start: int, keep: int = 4096) -> None:
        self._first = start + 1  # sequence number of _times[0]
        self._times: list[float] = []
        self._keep = keep

    @property
    def newest(self) -> int:
        return self._first + len(self._times) - 1

    def sent(self, seq: int, at: float) -> None:
        if seq != self.newest + 1:
            raise ValueError(f"round {seq} out of order (newest {self.newest})")
        self._times.append(at)
        if len(self._times) > 2 * self._keep:
            del self._times[: self._keep]
            self._first += self._keep

    def sent_at(self, seq: int) -> float | None:
        i = seq - self._first
        return self._times[i] if 0 <= i < len(self._times) else None

    def newest_sent_by(self, when: float) -> int:
        """The newest round sent at or before `when` (the one before all we keep if none)."""
        return self._first + bisect.bisect_right(self._times, when) - 1
