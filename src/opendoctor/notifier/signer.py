"""Which key signs a callback: its alarm's project's (`notifier.signing_keys`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from opendoctor.core.notifications import OutboxEntry
from opendoctor.core.signing import SIGNATURE_HEADER, sign


class ProjectSigner:
    """`project_of` names an entry's project (its alarm's), as the dispatcher's shares
    do."""

    def __init__(self, project_of: Callable[[OutboxEntry], str], keys: dict[str, bytes]) -> None:
        self.project_of = project_of
        self.keys = keys

    def __call__(self, entry: OutboxEntry, payload: bytes) -> dict[str, str]:
        if not self.keys:
            return {}
        key = self.keys.get(self.project_of(entry))
        if key is None:
            return {}
        # Signed at each attempt: a retry an hour later is fresh, and says so.
        return {SIGNATURE_HEADER: sign(key, payload, int(time.time()))}
