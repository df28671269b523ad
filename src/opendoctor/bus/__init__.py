"""Message passing between blocks: in-process in embedded mode, RabbitMQ when scaled out.

`AmqpBus` (in `opendoctor.bus.amqp`) needs the `amqp` extra; it is imported on first
use, so embedded mode runs without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opendoctor.bus.memory import InProcessBus

if TYPE_CHECKING:
    from opendoctor.bus.amqp import AmqpBus

__all__ = ["AmqpBus", "InProcessBus"]


def __getattr__(name: str) -> Any:
    if name == "AmqpBus":
        from opendoctor.bus.amqp import AmqpBus

        return AmqpBus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
