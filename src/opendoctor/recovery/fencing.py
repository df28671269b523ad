"""Fencing: make sure a failed host is off before its servers run anywhere else.

A host that looks dead may still run its VMs (a hung management stack, a cut network
while the storage network works): evacuating them then would run each twice, on shared
disks. So a host is fenced through its BMC, powered off at once and *confirmed* off,
before anything is evacuated (DESIGN §3); a fence that fails or is not confirmed within
`confirm_timeout` is a `FenceError`, and nothing of that host is to be evacuated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from opendoctor.core.ports import FenceDevice, FenceError
from opendoctor.core.settings import FencingSettings
from opendoctor.infra import metrics

log = logging.getLogger(__name__)
POLL = 0.1  # seconds between power-state reads while a power-off lands


class Fencing:
    """The fence devices of the hosts that have one, and what fencing does with them."""

    def __init__(
        self, settings: FencingSettings, devices: Mapping[str, FenceDevice] | None = None
    ) -> None:
        self.settings = settings
        if devices is None:
            from opendoctor.recovery.redfish import RedfishDevice

            devices = {h: RedfishDevice(h, d) for h, d in settings.devices.items()}
        self.devices = dict(devices)

    def can_fence(self, host: str) -> bool:
        return host in self.devices

    async def fence(self, host: str) -> float:
        """Power `host` off and wait until its BMC says it is off; when it did (epoch)."""
        device = self.devices.get(host)
        if device is None:
            raise FenceError(f"no fence device is configured for {host}")
        started = time.monotonic()
        try:
            await device.power_off()
            state = await device.power_state()
            while state != "off":
                if time.monotonic() - started > self.settings.confirm_timeout:
                    raise FenceError(
                        f"{host} still reports its power {state} "
                        f"{self.settings.confirm_timeout:g} s after the power-off"
                    )
                await asyncio.sleep(POLL)
                state = await device.power_state()
        except FenceError as exc:
            metrics.FENCES.labels("failed").inc()
            log.error("fencing failed", extra={"host": host, "error": str(exc)})
            raise
        metrics.FENCES.labels("confirmed").inc()
        took = time.monotonic() - started
        log.info("host fenced", extra={"host": host, "seconds": round(took, 3)})
        return time.time()

    async def unfence(self, host: str) -> None:
        """Power `host` on again (it was repaired)."""
        device = self.devices.get(host)
        if device is None:
            raise FenceError(f"no fence device is configured for {host}")
        await device.power_on()

    async def close(self) -> None:
        await asyncio.gather(*(d.close() for d in self.devices.values()))
