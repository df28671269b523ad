"""A fence is confirmed only by the device saying the power is off, within the time
allowed; a device that keeps saying on is a failed fence, not a fenced host."""

from __future__ import annotations

import pytest

from opendoctor.core.ports import FenceDevice, FenceError
from opendoctor.core.recovery_settings import FencingSettings
from opendoctor.recovery.fencing import Fencing


class StuckBmc:
    """A BMC that takes the power-off and goes on reporting the power on (a stuck relay,
    a BMC that lies): behind the same protocol as the Redfish device."""

    def __init__(self) -> None:
        self.offs = 0

    async def power_state(self) -> str:
        return "on"

    async def power_off(self) -> None:
        self.offs += 1

    async def power_on(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_power_off_that_is_not_confirmed_is_a_failed_fence() -> None:
    bmc = StuckBmc()
    assert isinstance(bmc, FenceDevice)
    fencing = Fencing(FencingSettings(confirm_timeout=0.3), {"compute1": bmc})
    with pytest.raises(FenceError, match=r"compute1 still reports its power on 0\.3 s after"):
        await fencing.fence("compute1")
    assert bmc.offs == 1
