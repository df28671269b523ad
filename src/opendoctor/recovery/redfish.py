"""A fence device that is a Redfish BMC, through sushy (the client of OpenStack's
bare-metal service): the one module that imports it.

sushy is synchronous: each call runs on a worker thread, so the event loop never waits
on a BMC. The session is made on first use, so that a BMC that does not answer at start
does not stop the service; what a BMC refuses or fails is a `FenceError` that names the
host and never the password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from opendoctor.core.ports import FenceError
from opendoctor.core.recovery_settings import FenceDeviceSettings

if TYPE_CHECKING:
    import sushy

T = TypeVar("T")
# Redfish's power states: a host powering off is not off yet.
POWER = {"on": "on", "off": "off", "poweringon": "on", "poweringoff": "on", "paused": "on"}


class RedfishDevice:
    """The BMC of `host`, by its settings (`recovery.fencing.devices`)."""

    def __init__(self, host: str, settings: FenceDeviceSettings) -> None:
        self.host = host
        self.settings = settings
        self._system: Any = None

    def _connect(self) -> Any:
        try:
            import sushy
            from sushy import auth
        except ImportError as exc:
            raise FenceError("Redfish fencing needs: pip install 'opendoctor[fencing]'") from exc
        s = self.settings
        account = auth.BasicAuth(username=s.username, password=s.password.get_secret_value())
        root: sushy.Sushy = sushy.Sushy(s.address, auth=account, verify=s.verify_tls)
        if s.system:
            path = (
                s.system
                if s.system.startswith("/")
                else f"{root.get_system_collection().path}/{s.system}"
            )
            return root.get_system(path)
        return root.get_system()  # the only one

    async def _call(self, fn: Callable[[Any], T]) -> T:
        from sushy import exceptions

        def run() -> T:
            if self._system is None:
                self._system = self._connect()
            return fn(self._system)

        try:
            return await asyncio.to_thread(run)
        except exceptions.SushyError as exc:
            raise FenceError(f"the BMC of {self.host} ({self.settings.address}): {exc}") from exc
        except OSError as exc:
            raise FenceError(f"the BMC of {self.host} does not answer: {exc}") from exc

    async def power_state(self) -> str:
        def read(system: Any) -> str:
            system.refresh()
            state = system.power_state  # sushy's PowerState enum (its value: Redfish's word)
            return str(getattr(state, "value", state) or "").lower()

        return POWER.get(await self._call(read), "unknown")

    async def power_off(self) -> None:
        import sushy

        await self._call(lambda system: system.reset_system(sushy.RESET_FORCE_OFF))

    async def power_on(self) -> None:
        import sushy

        await self._call(lambda system: system.reset_system(sushy.RESET_ON))

    async def close(self) -> None:
        self._system = None
