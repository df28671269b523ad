"""Values worked out once per key, for keys that come back by the thousand.

A storm's callbacks go to a handful of URLs, each a thousand times: what a URL leads to
(its egress verdict, its sender and its consumer's share) is worked out at the first one.
The keys are bounded by what users configured, but users configure new ones as alarms
come and go, so at most `most` are kept; when full, all are forgotten and worked out
again as they come back (cheaper to keep right than an LRU's bookkeeping per hit).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Remembered(Generic[K, V]):
    def __init__(self, work: Callable[[K], V], most: int = 10_000) -> None:
        self._work = work
        self._most = most
        self._kept: dict[K, V] = {}

    def __call__(self, key: K) -> V:
        try:
            return self._kept[key]
        except KeyError:
            pass
        if len(self._kept) >= self._most:
            self._kept.clear()
        value = self._kept[key] = self._work(key)
        return value
