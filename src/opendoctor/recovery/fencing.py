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
from collections.abc import Awaitable, Callable, Mapping

from opendoctor.core.egress import EgressPolicy, endpoint
from opendoctor.core.ports import FenceDevice, FenceError
from opendoctor.core.recovery_settings import FenceDeviceSettings, FencingSettings
from opendoctor.infra import metrics

log = logging.getLogger(__name__)
POLL = 0.1  # seconds between power-state reads while a power-off lands
NO_DEVICE = "no fence device is configured for {host}: its servers may still run there"


# A host's device registered through the API (with its password), or None.
Registered = Callable[[str], Awaitable[FenceDeviceSettings | None]]


def build_device(host: str, settings: FenceDeviceSettings) -> FenceDevice:
    """The device a host's settings describe: each host's BMC by its driver (a cloud may
    have both kinds)."""
    if settings.driver == "ipmi":
        from opendoctor.recovery.ipmi import IpmiDevice

        return IpmiDevice(host, settings)
    from opendoctor.recovery.redfish import RedfishDevice

    return RedfishDevice(host, settings)


class Fencing:
    """The fence devices of the hosts that have one, and what fencing does with them:
    those of the configuration, and those registered through the API (`registered`),
    which go through the egress policy before they are called."""

    def __init__(
        self,
        settings: FencingSettings,
        devices: Mapping[str, FenceDevice] | None = None,
        registered: Registered | None = None,
    ) -> None:
        self.settings = settings
        if devices is None:
            devices = {h: build_device(h, d) for h, d in settings.devices.items()}
        self.devices = dict(devices)
        self.registered = registered
        # Devices built from registrations, with what they were built from: a changed
        # registration builds a new one.
        self._built: dict[str, tuple[FenceDeviceSettings, FenceDevice]] = {}
        # Told each host confirmed off (server-group messaging: only then are its VMs
        # "failed" to their peers).
        self.fenced: list[Callable[[str], None]] = []

    async def device(self, host: str) -> FenceDevice | None:
        """`host`'s device, or None. Raises `FenceError` for a registered device whose
        address the egress policy refuses."""
        if host in self.devices:
            return self.devices[host]
        found = None if self.registered is None else await self.registered(host)
        cached = self._built.get(host)
        if cached is not None and cached[0] == found:
            return cached[1]
        if cached is not None:
            del self._built[host]
            await cached[1].close()
        if found is None:
            return None
        problem = await egress_problem(found, self.settings.egress())
        if problem is not None:
            raise FenceError(f"the fence device of {host} may not be called: {problem}")
        device = build_device(host, found)
        self._built[host] = (found, device)
        return device

    async def can_fence(self, host: str) -> bool:
        try:
            return await self.device(host) is not None
        except FenceError:
            return True  # it has one; fencing will say why it cannot be used

    async def fence(self, host: str) -> float:
        """Power `host` off and wait until its BMC says it is off; when it did (epoch)."""
        device = await self.device(host)
        if device is None:
            raise FenceError(NO_DEVICE.format(host=host))
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
        for watch in self.fenced:
            watch(host)
        return time.time()

    async def unfence(self, host: str) -> None:
        """Power `host` on again (it was repaired)."""
        device = await self.device(host)
        if device is None:
            raise FenceError(f"no fence device is configured for {host}")
        await device.power_on()

    async def close(self) -> None:
        built = [d for _, d in self._built.values()]
        await asyncio.gather(*(d.close() for d in [*self.devices.values(), *built]))


async def egress_problem(device: FenceDeviceSettings, policy: EgressPolicy) -> str | None:
    """Why a registered device's address may not be called, or None: each address its
    name resolves to must pass the policy (a BMC network is private: allowed by
    `recovery.fencing.egress_allow`)."""
    host, port = device.ipmi_endpoint if device.driver == "ipmi" else endpoint(device.address)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    except OSError as exc:
        return f"{host} does not resolve: {exc}"
    for info in infos:
        problem = policy.problem(str(info[4][0]), port)
        if problem is not None:
            return problem.replace("notifier.egress_allow", "recovery.fencing.egress_allow")
    return None
