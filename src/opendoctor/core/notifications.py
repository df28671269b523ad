"""Notifications on their way to consumers: the outbox entry every notification is until
its consumer has it, and the batches the inspector hands the notifier."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opendoctor.core.model import NotificationEvent

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(slots=True)
class OutboxEntry:
    id: str
    alarm_id: str
    url: str
    body: dict[str, Any]
    created: float
    fault_id: str | None = None
    status: str = PENDING
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str | None = None
    delivered: float | None = None
    # Not persisted: the encoded body, made once and reused by every attempt.
    payload: bytes = field(default=b"", repr=False)

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "alarm_id": self.alarm_id,
            "url": self.url,
            "body": self.body,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt": self.next_attempt,
            "last_error": self.last_error,
            "created": self.created,
            "delivered": self.delivered,
            "fault_id": self.fault_id,
        }


# Events that tell owners, with the root cause their callbacks carry.
Batch = tuple[list[NotificationEvent], Any]
