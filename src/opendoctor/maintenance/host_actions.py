"""Host actions that need nothing outside maintenance (the others, a BMC's power cycle
and a workflow, are wired in by `app.maintenance`)."""

from __future__ import annotations

from typing import Any


class NothingToDo:
    """The `dummy` host action (as Fenix's): the host is drained and returned as it was,
    for work done by other means while it is empty."""

    async def maintain(self, host: str, metadata: dict[str, Any]) -> None:
        return None
