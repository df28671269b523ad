"""The `Bus` protocol: how blocks hand work to each other."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol

Handler = Callable[[Any], Awaitable[None]]

_REDELIVERED: ContextVar[bool] = ContextVar("opendoctor_bus_redelivered", default=False)


class Bus(Protocol):
    """Messages on a topic are handled in order per `key`; different keys run concurrently."""

    def subscribe(self, topic: str, handler: Handler) -> None: ...

    async def publish(self, topic: str, message: Any, key: str = "") -> None: ...

    async def drain(self) -> None:
        """Wait until every message published so far has been handled."""

    async def close(self) -> None: ...


def redelivered() -> bool:
    """Whether the message a handler is handling may have been handled before: the
    broker delivered it once already (to a consumer that died, or whose ack was lost).

    A handler whose work is not idempotent by itself (sending to the outside world)
    checks what was done only then, which keeps its first delivery, the common case,
    off the database."""
    return _REDELIVERED.get()


@contextlib.contextmanager
def handling(again: bool) -> Iterator[None]:
    """For a bus: run a handler with `redelivered()` answering `again`."""
    token = _REDELIVERED.set(again)
    try:
        yield
    finally:
        _REDELIVERED.reset(token)
