"""`PowerCycle`: the maintenance host action that turns an emptied host off and on again
through its BMC, the fence device fencing uses.

A host an operator staged an upgrade on boots into it when it is powered on again: the
session reads the new version from the VIM once the host is back. Power-off is the
fence's (immediate, confirmed off); power-on is confirmed too, so that a BMC that
accepted the request but left the host dark fails the host action instead of leaving
the session to wait for a host that never comes back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from opendoctor.recovery.fencing import POLL, Fencing

log = logging.getLogger(__name__)

MAX_OFF_SECONDS = 600.0


class MaintainError(RuntimeError):
    """A host action could not be done; the message says why and for which host."""


def off_seconds(metadata: dict[str, Any]) -> float:
    """How long the host stays off: the action's `off_seconds` (a number, or a string of
    one: session metadata often holds strings), at most `MAX_OFF_SECONDS`."""
    raw = metadata.get("off_seconds", 0)
    value: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            value = None
    if value is None or math.isnan(value) or value < 0:
        raise MaintainError(f"'off_seconds' must be a number of seconds >= 0, got {raw!r}")
    return min(value, MAX_OFF_SECONDS)


class PowerCycle:
    """A `HostMaintainer`: power the host off through its BMC (confirmed), keep it off
    for `off_seconds`, power it on (confirmed)."""

    def __init__(self, fencing: Fencing) -> None:
        self.fencing = fencing

    async def maintain(self, host: str, metadata: dict[str, Any]) -> None:
        wait = off_seconds(metadata)
        if not await self.fencing.can_fence(host):
            raise MaintainError(
                f"{host} has no fence device (BMC) to power-cycle it through: give it one "
                f"in recovery.fencing.devices, or register its BMC with "
                f"PUT /v1/fence-devices/{host}"
            )
        await self.fencing.fence(host)
        log.info("maintenance power-off", extra={"host": host, "off_seconds": wait})
        try:
            if wait:
                await asyncio.sleep(wait)
        except asyncio.CancelledError:
            # A session stopped while the host is off must not leave it dark: it is
            # drained and disabled, so powering it on runs nothing it should not.
            try:
                await self._power_on(host)
            except Exception as exc:
                log.error(
                    "power-on after a cancelled power cycle failed",
                    extra={"host": host, "error": str(exc)},
                )
            raise
        await self._power_on(host)

    async def _power_on(self, host: str) -> None:
        await self.fencing.unfence(host)
        device = await self.fencing.device(host)
        if device is None:  # unregistered meanwhile: unfence used it, nothing to ask now
            return
        timeout = self.fencing.settings.confirm_timeout
        started = time.monotonic()
        while (state := await device.power_state()) != "on":
            if time.monotonic() - started > timeout:
                raise MaintainError(
                    f"{host} still reports its power {state} {timeout:g} s after the power-on"
                )
            await asyncio.sleep(POLL)
        log.info("maintenance power-on", extra={"host": host})
