"""The power-cycle host action over fake BMCs: off (confirmed), a while off, on
(confirmed); a host without a BMC, a BMC that leaves the host dark, and a stopped
session that must not leave the host off. The lab's real BMC: tests/integration/recovery."""

from __future__ import annotations

import asyncio

import pytest

from opendoctor.core.ports import HostMaintainer
from opendoctor.core.recovery_settings import FencingSettings
from opendoctor.recovery.fencing import Fencing
from opendoctor.recovery.power_cycle import MAX_OFF_SECONDS, MaintainError, PowerCycle, off_seconds
from tests.conftest import eventually

from .support import Bmc


class DarkBmc(Bmc):
    """Takes the power-on and leaves the host off (a BMC that lost its power supply)."""

    async def power_on(self) -> None:
        return None


def cycle(bmc: Bmc, confirm_timeout: float = 5.0) -> PowerCycle:
    return PowerCycle(Fencing(FencingSettings(confirm_timeout=confirm_timeout), {"compute1": bmc}))


async def test_the_host_is_powered_off_and_on() -> None:
    bmc = Bmc()
    power_cycle: HostMaintainer = cycle(bmc)  # mypy checks that it is one
    await power_cycle.maintain("compute1", {})
    assert (bmc.offs, bmc.power) == (1, "on")


@pytest.mark.parametrize(
    ("given", "seconds"),
    [(None, 0.0), (0, 0.0), (2.5, 2.5), ("3", 3.0), (10_000, MAX_OFF_SECONDS)],
)
def test_off_seconds_are_a_number_of_at_most_ten_minutes(given: object, seconds: float) -> None:
    assert off_seconds({} if given is None else {"off_seconds": given}) == seconds


@pytest.mark.parametrize("bad", [-1, "soon", True, float("nan"), [1]])
async def test_bad_off_seconds_power_nothing_off(bad: object) -> None:
    bmc = Bmc()
    with pytest.raises(MaintainError, match="'off_seconds'"):
        await cycle(bmc).maintain("compute1", {"off_seconds": bad})
    assert bmc.offs == 0


async def test_a_host_without_a_fence_device_is_refused_with_the_way_to_give_it_one() -> None:
    bmc = Bmc()
    with pytest.raises(MaintainError) as refused:
        await cycle(bmc).maintain("compute2", {})
    message = str(refused.value)
    assert "compute2" in message
    assert "recovery.fencing.devices" in message and "/v1/fence-devices/compute2" in message
    assert bmc.offs == 0


async def test_a_host_the_bmc_leaves_dark_fails_the_action() -> None:
    bmc = DarkBmc()
    with pytest.raises(MaintainError, match=r"compute1 still reports its power off 0\.2 s after"):
        await cycle(bmc, confirm_timeout=0.2).maintain("compute1", {})


async def test_a_stopped_session_powers_the_host_on_again() -> None:
    bmc = Bmc()
    task = asyncio.create_task(cycle(bmc).maintain("compute1", {"off_seconds": 600}))
    await eventually(lambda: bmc.power == "off", what="the power-off")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bmc.power == "on"
