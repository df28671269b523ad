"""What every bus shares: whether the message being handled may have been handled before.

The `Bus` protocol itself is a port (`opendoctor.core.ports`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_REDELIVERED: ContextVar[bool] = ContextVar("opendoctor_bus_redelivered", default=False)


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
