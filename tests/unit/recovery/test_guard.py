"""No server of a failed host moves before the host is confirmed off: a fence that fails
moves nothing, raises a critical alarm that says why, and is tried again; a cut link is
left alone unless the policy says otherwise."""

from __future__ import annotations

import asyncio

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.faults import Fault
from opendoctor.core.model import HOST_UNREACHABLE
from opendoctor.core.recovery_settings import FencingSettings, RecoverySettings
from opendoctor.recovery.guard import FENCING_FAILED
from tests.unit.recovery.support import Bmc, Told, hosts, quick, recover, servers

HOSTS = ("compute1", "compute2")


def evacuations(vim: MemoryVim) -> list[tuple[str, ...]]:
    return [c for c in vim.calls if c[0] == "evacuate"]


def alarm_reasons(told: Told) -> list[str]:
    return [str(e.traits["reason"].value) for e in told.events if e.event_type == FENCING_FAILED]


async def test_a_host_without_a_fence_device_is_not_evacuated_and_the_alarm_says_why() -> None:
    on = servers(2)
    vim = MemoryVim(hosts(*HOSTS), on)
    told = Told()
    fault = await recover(vim, on, told=told, settings=quick(retry_for=0))
    assert evacuations(vim) == []
    assert [i.result for i in fault.recovery] == ["failed", "failed"]
    assert all(
        "no fence device is configured for compute1" in (i.error or "") for i in fault.recovery
    )
    (reason,) = alarm_reasons(told)
    assert reason.startswith("not evacuated: fencing compute1 failed: no fence device")
    (event,) = told.events
    assert event.traits["severity"].value == "critical" and event.traits["host"].value == "compute1"
    assert "T05" not in fault.trace


async def test_the_policy_may_evacuate_hosts_without_a_device_unfenced() -> None:
    on = servers(2)
    vim = MemoryVim(hosts(*HOSTS), on)
    fault = await recover(vim, on, settings=quick(without_device="evacuate"))
    assert [i.result for i in fault.recovery] == ["ok", "ok"]
    assert "T05" not in fault.trace


async def test_a_failed_fence_is_tried_again_and_evacuation_waits_for_it() -> None:
    on = servers(2)
    vim = MemoryVim(hosts(*HOSTS), on)
    told = Told()
    bmc = Bmc(failures=2)
    fault = await recover(vim, on, bmc=bmc, told=told, settings=quick(retry_first=0.01))
    assert bmc.offs == 3 and bmc.power == "off"
    assert len(alarm_reasons(told)) == 2
    assert all("the BMC did not answer" in r for r in alarm_reasons(told))
    assert [i.result for i in fault.recovery] == ["ok", "ok"]
    # Fenced before the first evacuation call, which came after the failed attempts.
    assert fault.trace["T05"] <= fault.trace["T06"]


async def test_a_host_that_comes_back_while_its_fence_is_retried_keeps_its_servers() -> None:
    on = servers(1)
    vim = MemoryVim(hosts(*HOSTS), on)
    fault = Fault("f1", "compute.host.down", "compute1", 0.0)

    class ClearsOnAlarm(Told):
        async def notify_many(self, batches):  # type: ignore[no-untyped-def]
            fault.status = "cleared"  # the host answered again meanwhile
            return await super().notify_many(batches)

    settings = quick(retry_first=0.01)
    done = recover(
        vim, on, bmc=Bmc(failures=100), told=ClearsOnAlarm(), settings=settings, fault=fault
    )
    await asyncio.wait_for(done, 5)
    (item,) = fault.recovery
    assert item.result == "cancelled" and "came back before it was fenced" in (item.error or "")
    assert evacuations(vim) == []


async def test_a_host_that_came_back_before_its_fence_began_is_not_powered_off() -> None:
    """A false alarm's host answered again while its marks settled (the fault cleared):
    it keeps its power and its servers (seen in CI: a stalled lab host fenced after its
    "up" had been reported)."""
    on = servers(1)
    vim = MemoryVim(hosts(*HOSTS), on)
    fault = Fault("f1", "compute.host.down", "compute1", 0.0)
    fault.status = "cleared"
    bmc = Bmc()
    await recover(vim, on, bmc=bmc, fault=fault)
    assert bmc.offs == 0 and bmc.power == "on"
    (item,) = fault.recovery
    assert item.result == "cancelled" and "came back before it was fenced" in (item.error or "")
    assert evacuations(vim) == []


async def test_a_cut_link_is_left_alone() -> None:
    on = servers(2)
    vim = MemoryVim(hosts(*HOSTS), on)
    bmc = Bmc()
    fault = await recover(vim, on, bmc=bmc, fault_type=HOST_UNREACHABLE)
    assert fault.recovery == [] and bmc.offs == 0 and evacuations(vim) == []


async def test_a_cut_link_is_fenced_and_evacuated_when_the_policy_says_so() -> None:
    on = servers(2)
    vim = MemoryVim(hosts(*HOSTS), on)
    vim.hosts["compute1"].forced_down, vim.hosts["compute1"].state = False, "up"
    bmc = Bmc()
    settings = RecoverySettings(cut_link="fence-and-evacuate", fencing=FencingSettings())
    fault = await recover(vim, on, bmc=bmc, settings=settings, fault_type=HOST_UNREACHABLE)
    assert bmc.power == "off"
    assert [i.result for i in fault.recovery] == ["ok", "ok"]
    calls = [c[0] for c in vim.calls if c[0] in ("force_down", "evacuate")]
    assert calls[0] == "force_down"  # the VIM hears the host is down before anything moves


async def test_a_cut_link_is_never_evacuated_unfenced() -> None:
    on = servers(1)
    vim = MemoryVim(hosts(*HOSTS), on)
    vim.hosts["compute1"].forced_down, vim.hosts["compute1"].state = False, "up"
    fencing = FencingSettings(without_device="evacuate", retry_for=0)
    settings = RecoverySettings(cut_link="fence-and-evacuate", fencing=fencing)
    fault = await recover(vim, on, settings=settings, fault_type=HOST_UNREACHABLE)
    (item,) = fault.recovery
    assert item.result == "failed" and "no fence device" in (item.error or "")
    assert evacuations(vim) == [] and not vim.hosts["compute1"].forced_down
