"""The `Bus` protocol: how blocks hand work to each other."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

Handler = Callable[[Any], Awaitable[None]]


class Bus(Protocol):
    """Messages on a topic are handled in order per `key`; different keys run concurrently."""

    def subscribe(self, topic: str, handler: Handler) -> None: ...

    async def publish(self, topic: str, message: Any, key: str = "") -> None: ...

    async def drain(self) -> None:
        """Wait until every message published so far has been handled."""

    async def close(self) -> None: ...
