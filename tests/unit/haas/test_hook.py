"""The hook between the inspector and recovery (`app.haas.HaasPart.wrap`): cluster nodes
go to the HA engine, everything else to the default recovery, and on a host failure no
server is moved by both."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opendoctor.app.haas import HaasPart
from opendoctor.core.faults import Fault
from opendoctor.core.haas import Policy
from opendoctor.core.model import HOST_DOWN, HOST_UNREACHABLE, Server
from opendoctor.core.settings import Settings
from opendoctor.infra.httpclient import HttpClient
from opendoctor.recovery.fencing import Fencing
from opendoctor.store.haas import HaasStore
from tests.unit.haas.support import fault, pair, vim
from tests.unit.recovery.support import Bmc, Told


def part(store: HaasStore, tmp_path: Path, bmc: Bmc) -> tuple[HaasPart, HttpClient]:
    settings = Settings(state_dir=tmp_path)
    fencing = Fencing(settings.recovery.fencing, devices={"compute1": bmc})
    http = HttpClient()
    return HaasPart(settings, store, vim(), http, Told(), fencing, lambda: None), http


async def test_nodes_go_to_the_engine_and_other_servers_to_the_default(
    store: HaasStore, tmp_path: Path
) -> None:
    bmc = Bmc()
    haas, http = part(store, tmp_path, bmc)
    await pair(store, Policy("c1", "evac", "evacuate", domain=("compute3",)), roles=False)
    memory = haas.engine.reach.vim
    stranger = Server("vm-z", "vm-z", "compute1", "p1")
    memory.servers["vm-z"] = stranger  # type: ignore[attr-defined]
    given: list[list[str]] = []
    restarted: list[str] = []

    async def host_recovery(f: Fault, servers: list[Server], settled: object) -> None:
        given.append([s.id for s in servers])
        f.recovery = []  # host recovery writes its items whole, as it does

    async def vm_recovery(f: Fault, server: Server) -> None:
        restarted.append(server.id)

    recover, recover_server = haas.wrap(host_recovery, vm_recovery)
    assert recover is not None and recover_server is not None
    try:
        f = Fault("f1", HOST_DOWN, "compute1", 0.0)
        await memory.force_down("compute1", True)
        servers = [memory.servers[x] for x in ("vm-a", "vm-z")]  # type: ignore[attr-defined]
        await recover(f, servers, asyncio.sleep(0))
        assert given == [["vm-z"]]
        assert memory.servers["vm-a"].host == "compute3"  # type: ignore[attr-defined]
        assert bmc.offs == 1 and bmc.power == "off"
        assert [(i.server_id, i.result) for i in f.recovery] == [("vm-a", "ok")]
        await recover_server(fault("vm-z"), stranger)
        assert restarted == ["vm-z"]
    finally:
        await http.close()


async def test_with_recovery_off_nothing_is_wrapped(store: HaasStore, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, recovery={"enabled": False})
    http = HttpClient()
    try:
        haas = HaasPart(settings, store, vim(), http, Told(), None, lambda: None)
        assert haas.wrap(None, None) == (None, None)
    finally:
        await http.close()


async def test_a_cut_links_servers_are_all_left_to_the_default(
    store: HaasStore, tmp_path: Path
) -> None:
    bmc = Bmc()
    haas, http = part(store, tmp_path, bmc)
    await pair(store, Policy("c1", "evac", "evacuate"), roles=False)
    given: list[list[str]] = []

    async def host_recovery(f: Fault, servers: list[Server], settled: object) -> None:
        given.append([s.id for s in servers])

    recover, _ = haas.wrap(host_recovery, None)
    assert recover is not None
    try:
        memory = haas.engine.reach.vim
        servers = [memory.servers["vm-a"]]  # type: ignore[attr-defined]
        await recover(Fault("f1", HOST_UNREACHABLE, "compute1", 0.0), servers, asyncio.sleep(0))
        assert given == [["vm-a"]] and bmc.offs == 0
        assert await store.history("c1", 10) == []
    finally:
        await http.close()
