"""Message passing between blocks: in-process by default (RabbitMQ comes with scale-out)."""

from opendoctor.bus.base import Bus, Handler
from opendoctor.bus.memory import InProcessBus

__all__ = ["Bus", "Handler", "InProcessBus"]
