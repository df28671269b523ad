"""A bounded, in-memory history of alarms raised and cleared in the entity graph."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from opendoctor.inspector.graph.model import Vertex


class AlarmHistory:
    def __init__(self, size: int = 10_000) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)

    def record(self, change: str, alarm: Vertex, on: str | None, caused_by: str | None) -> None:
        self.entries.append(
            {
                "time": time.time(),
                "change": change,  # raised | cleared
                "alarm": alarm.key,
                "name": alarm.name,
                "severity": alarm.state,
                "on": on,
                "caused_by": caused_by,
                "deduced": bool((alarm.props or {}).get("deduced")),
            }
        )

    def recent(self, limit: int, alarm: str | None = None) -> list[dict[str, Any]]:
        """Newest first; only one alarm's entries when `alarm` is given."""
        out: list[dict[str, Any]] = []
        for entry in reversed(self.entries):
            if alarm is None or entry["alarm"] == alarm:
                out.append(entry)
                if len(out) >= limit:
                    break
        return out
