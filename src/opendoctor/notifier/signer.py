"""Which key signs a callback: its alarm's project's (`notifier.signing_keys`)."""

from __future__ import annotations

import time

from opendoctor.core.notifications import OutboxEntry
from opendoctor.core.signing import SIGNATURE_HEADER, sign
from opendoctor.notifier.index import AlarmIndex


class ProjectSigner:
    def __init__(self, index: AlarmIndex, keys: dict[str, bytes]) -> None:
        self.index = index
        self.keys = keys

    def __call__(self, entry: OutboxEntry, payload: bytes) -> dict[str, str]:
        if not self.keys:
            return {}
        alarm = self.index.get(entry.alarm_id)
        key = self.keys.get(alarm.project_id) if alarm is not None else None
        if key is None:
            return {}
        # Signed at each attempt: a retry an hour later is fresh, and says so.
        return {SIGNATURE_HEADER: sign(key, payload, int(time.time()))}
