"""Where a failed host's servers go, by the segment's recovery method, within the targets'
capacity, in priority order, and on another host when one refuses."""

from __future__ import annotations

from collections import Counter

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.model import Server
from opendoctor.core.ports import VimError
from opendoctor.core.recovery_settings import FencingSettings, RecoverySettings
from tests.unit.recovery.support import Bmc, Segments, hosts, recover, segment, servers

ALL = ("compute1", "compute2", "compute3", "spare1")
# Without compute3, the segment's ordinary hosts cannot take everything.
NO_COMPUTE3 = ("compute1", "compute2", "spare1")


def placed(vim: MemoryVim) -> Counter[str]:
    return Counter(s.host for s in vim.servers.values())


async def test_auto_uses_any_usable_host_but_the_segments_reserved_ones() -> None:
    on = servers(4, HA_Enabled="True")
    vim = MemoryVim(hosts(*ALL, reserved=["spare1"]), on)
    seg = segment("auto", ("compute1", False), ("compute2", False), ("spare1", True))
    fault = await recover(vim, on, bmc=Bmc(), segments=Segments(seg))
    assert [i.result for i in fault.recovery] == ["ok"] * 4
    # As Nova's scheduler would, auto spreads them over every usable host (compute3 is
    # in no segment); the reserved spare1 stays empty.
    assert placed(vim) == {"compute2": 2, "compute3": 2}
    assert {i.method for i in fault.recovery} == {"auto"}
    assert seg.host("spare1").reserved  # type: ignore[union-attr]


async def test_reserved_host_enables_the_reserved_host_and_takes_its_reservation() -> None:
    on = servers(3, HA_Enabled="True")
    vim = MemoryVim(hosts(*ALL, reserved=["spare1"]), on)
    seg = segment("reserved_host", ("compute1", False), ("compute2", False), ("spare1", True))
    fault = await recover(vim, on, bmc=Bmc(), segments=Segments(seg))
    assert [i.result for i in fault.recovery] == ["ok"] * 3
    assert placed(vim) == {"spare1": 3}
    assert vim.hosts["spare1"].enabled
    assert not seg.host("spare1").reserved  # type: ignore[union-attr]
    # Enabled once, before the first server went there.
    enables = [c for c in vim.calls if c[0] == "set_host_enabled"]
    assert enables == [("set_host_enabled", "spare1", "True")]
    assert vim.calls.index(enables[0]) < next(
        i for i, c in enumerate(vim.calls) if c[0] == "evacuate"
    )


async def test_auto_priority_sends_what_does_not_fit_to_the_reserved_host() -> None:
    on = servers(5, HA_Enabled="True")
    vim = MemoryVim(hosts(*NO_COMPUTE3, vcpus=3, reserved=["spare1"]), on)
    seg = segment("auto_priority", ("compute1", False), ("compute2", False), ("spare1", True))
    fault = await recover(vim, on, bmc=Bmc(), segments=Segments(seg))
    assert [i.result for i in fault.recovery] == ["ok"] * 5
    assert placed(vim) == {"compute2": 3, "spare1": 2}


async def test_rh_priority_fills_the_reserved_host_first() -> None:
    on = servers(5, HA_Enabled="True")
    vim = MemoryVim(hosts(*NO_COMPUTE3, vcpus=3, reserved=["spare1"]), on)
    seg = segment("rh_priority", ("compute1", False), ("compute2", False), ("spare1", True))
    fault = await recover(vim, on, bmc=Bmc(), segments=Segments(seg))
    assert [i.result for i in fault.recovery] == ["ok"] * 5
    assert placed(vim) == {"spare1": 3, "compute2": 2}


async def test_only_servers_with_ha_enabled_are_recovered_unless_the_segment_takes_all() -> None:
    def mixed() -> list[Server]:
        return servers(2, HA_Enabled="True") + [s for s in servers(4) if s.id in ("vm3", "vm4")]

    on = mixed()
    vim = MemoryVim(hosts(*ALL), on)
    seg = segment("auto", ("compute1", False), ("compute2", False))
    fault = await recover(vim, on, bmc=Bmc(), segments=Segments(seg))
    assert sorted(i.server_id for i in fault.recovery) == ["vm1", "vm2"]
    assert vim.servers["vm3"].host == "compute1"

    on = mixed()
    vim = MemoryVim(hosts(*ALL), on)
    seg = segment("auto", ("compute1", False), ("compute2", False), all_servers=True)
    fault = await recover(vim, on, bmc=Bmc(), segments=Segments(seg))
    assert len(fault.recovery) == 4


async def test_a_host_in_no_segment_has_every_server_recovered_by_the_default_method() -> None:
    on = servers(3)
    vim = MemoryVim(hosts(*ALL), on)
    fault = await recover(vim, on, bmc=Bmc())
    assert [i.result for i in fault.recovery] == ["ok"] * 3
    assert "compute1" not in placed(vim)


async def test_servers_go_in_priority_order() -> None:
    on = servers(3, HA_Enabled="True")
    for server, rank in zip(on, ("3", "1", ""), strict=True):
        if rank:
            server.metadata["HA_Priority"] = rank
    vim = MemoryVim(hosts(*ALL), on)
    settings = RecoverySettings(concurrency=1)
    await recover(vim, on, bmc=Bmc(), settings=settings)
    order = [c[1] for c in vim.calls if c[0] == "evacuate"]
    assert order == ["vm2", "vm1", "vm3"]


async def test_what_fits_nowhere_is_reported_and_no_host_goes_beyond_its_capacity() -> None:
    on = servers(5)
    vim = MemoryVim(hosts("compute1", "compute2", vcpus=3), on)
    fault = await recover(vim, on, bmc=Bmc())
    results = Counter(i.result for i in fault.recovery)
    assert results == {"ok": 3, "failed": 2}
    assert placed(vim)["compute2"] == 3
    for item in fault.recovery:
        if item.result == "failed":
            assert item.error is not None and item.error.startswith("no room:")
            assert item.started == 0.0  # no VIM call was made for it


class Refusing(MemoryVim):
    """A VIM whose scheduler refuses some target hosts (full by its own count, say)."""

    refuse: frozenset[str] = frozenset()

    async def evacuate(self, server_id: str, target_host: str | None = None) -> Server:
        if target_host in self.refuse:
            self.calls.append(("evacuate", server_id, target_host))
            raise VimError(f"{target_host}: No valid host was found", 400)
        return await super().evacuate(server_id, target_host)


async def test_an_evacuation_the_vim_refuses_goes_to_another_host() -> None:
    on = servers(1)
    vim = Refusing(hosts("compute1", "compute2", "compute3"), on)
    vim.refuse = frozenset({"compute2"})
    fault = await recover(vim, on, bmc=Bmc())
    (item,) = fault.recovery
    tried = [c[2] for c in vim.calls if c[0] == "evacuate"]
    assert item.result == "ok" and item.to_host == "compute3"
    # compute2 is chosen first (the emptiest, first by name) and refuses.
    assert tried == ["compute2", "compute3"] and item.attempts == 2


async def test_every_host_refusing_fails_the_server_with_each_reason() -> None:
    on = servers(1)
    vim = MemoryVim(hosts("compute1", "compute2", "compute3"), on)
    vim.fail.add("evacuate")
    fault = await recover(vim, on, bmc=Bmc(), settings=RecoverySettings(fencing=FencingSettings()))
    (item,) = fault.recovery
    assert item.result == "failed" and item.attempts == 2
    assert item.error is not None
    assert "compute2: evacuate failed" in item.error and "compute3: evacuate failed" in item.error
