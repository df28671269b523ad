"""How many events one monitor may report: a token bucket per monitor.

A monitor gone wrong (or a stolen token) must not flood the inspector: past its rate,
its reports get 429 with Retry-After, and a well-behaved monitor sends them again. The
bucket is large, so a real storm (every host of a rack at once) goes through whole.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from fastapi.responses import JSONResponse

from opendoctor.api.errors import error_body
from opendoctor.core.errors import RequestError


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class RateLimit:
    rate: float  # events per second, refilled continuously
    burst: float  # what a quiet monitor may send at once
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    # The events API takes events on the front loop's thread and on the service's
    # (app/front.py): a bucket's read and write must not interleave.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, who: str, count: int, now: float | None = None) -> float:
        """Take `count` events from `who`'s bucket: 0 when taken, else the seconds to wait
        before all of them could be (nothing is taken then: all or nothing, as the
        request is)."""
        with self._lock:
            return self._take(who, count, time.monotonic() if now is None else now)

    def _take(self, who: str, count: int, now: float) -> float:
        bucket = self._buckets.get(who)
        if bucket is None:
            bucket = self._buckets[who] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if count <= bucket.tokens:
            bucket.tokens -= count
            return 0.0
        if count > self.burst:
            return math.inf
        return (count - bucket.tokens) / self.rate


def refused(
    limit: RateLimit,
    key: str,
    count: int,
    *,
    who: str = "monitor",
    unit: str = "events",
    field: str = "body",
    settings: tuple[str, str] = ("api.events_rate", "api.events_burst"),
) -> JSONResponse | None:
    """Take `count` items from `key`'s bucket; the 429 to answer if it is over its rate
    (nothing taken), None if they were taken. More than a burst at once is a 413: waiting
    would never make room for them. `who`, `unit`, `field` and the names of the rate and
    burst `settings` word the refusal (a monitor's events by default)."""
    rate, burst = settings
    wait = limit.take(key, count)
    if math.isinf(wait):
        problem = f"{count} {unit} at once, over {burst}: send fewer at a time"
        raise RequestError(413, problem, field)
    if not wait:
        return None
    problem = f"{who} {key!r} is over its rate ({rate}); send again later"
    retry = {"Retry-After": str(math.ceil(wait))}
    return JSONResponse(error_body(429, [{"field": field, "problem": problem}]), 429, retry)
