"""The fence guard: no server of a failed host moves until the host is confirmed off.

A fence that fails (the BMC refuses, does not answer, or the power stays on), or a host
with no fence device where the policy refuses to evacuate unfenced, raises a critical
alarm that says why: an event `compute.host.fencing.failed` to the infrastructure
projects' alarms (an Aodh event alarm on that type fires with the reason), a log line and
the `opendoctor_fencing_blocked` gauge. Then the fence is tried again with doubling
pauses, until it is confirmed, the fault clears (the host came back: its servers never
left it), or `retry_for` runs out; each later failure is reported again. A fault that
cleared before its first attempt (a host that answered again while the VIM's marks
settled) is not fenced at all.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opendoctor.core.faults import Fault
from opendoctor.core.model import NotificationEvent
from opendoctor.core.ports import FenceError, NotifyTarget
from opendoctor.core.recovery_settings import FencingSettings
from opendoctor.infra import metrics
from opendoctor.recovery.fencing import NO_DEVICE, Fencing

log = logging.getLogger(__name__)

FENCING_FAILED = "compute.host.fencing.failed"


class Unfenced(Exception):
    """A host could not be fenced for good; its servers are not to move."""


class FenceGuard:
    def __init__(
        self,
        settings: FencingSettings,
        fencing: Fencing | None,
        notify: NotifyTarget | None = None,
    ) -> None:
        self.settings = settings
        self.fencing = fencing
        self.notify = notify

    async def needed(self, host: str) -> bool:
        """Whether `host` must be fenced before its servers move (else: evacuated
        unfenced, as the policy allows for hosts without a device)."""
        if self.settings.without_device == "refuse":
            return True
        return self.fencing is not None and await self.fencing.can_fence(host)

    async def fence(self, fault: Fault, host: str) -> float:
        """Fence `host`, retrying with back-off; when it was confirmed off (epoch).
        Raises `Unfenced` once retrying is over (the fault cleared, or time ran out)."""
        if fault.status != "active":
            # Cleared while its host's marks settled: it answered again before a server
            # moved. Powering it off now would end what still runs there.
            raise Unfenced(f"{host} came back before it was fenced")
        deadline = time.monotonic() + self.settings.retry_for
        delay = self.settings.retry_first
        attempt = 0
        blocked = False
        try:
            while True:
                attempt += 1
                try:
                    return await self._once(host)
                except FenceError as exc:
                    reason = str(exc)
                if not blocked:
                    blocked = True
                    metrics.FENCING_BLOCKED.inc()
                await self._alarm(fault, host, reason, attempt)
                if fault.status != "active":
                    raise Unfenced(f"{host} came back before it was fenced: {reason}")
                if time.monotonic() + delay > deadline:
                    raise Unfenced(f"fencing {host} failed {attempt} times; last: {reason}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_most)
                if fault.status != "active":
                    raise Unfenced(f"{host} came back before it was fenced: {reason}")
        finally:
            if blocked:
                metrics.FENCING_BLOCKED.dec()

    async def _once(self, host: str) -> float:
        if self.fencing is None:
            raise FenceError(NO_DEVICE.format(host=host))
        return await self.fencing.fence(host)  # it looks the device up, once

    async def _alarm(self, fault: Fault, host: str, reason: str, attempt: int) -> None:
        log.critical(
            "host not fenced: its servers stay where they are",
            extra={"host": host, "fault": fault.id, "attempt": attempt, "error": reason},
        )
        if self.notify is None:
            return
        event = NotificationEvent.build(
            FENCING_FAILED,
            fault_id=fault.id,
            host=host,
            reason=f"not evacuated: fencing {host} failed: {reason}",
            attempt=attempt,
            severity="critical",
        )
        try:
            sent = await self.notify.notify_many(
                [([event], {"fault_id": fault.id, "event_type": fault.type, "hostname": host})]
            )
            await self.notify.landed(sent)
        except Exception as exc:  # the alarm must not stop the retries
            log.error("fencing alarm not sent", extra={"host": host, "error": str(exc)})
