"""Recovery ends every server's item, whatever the VIM does: a recovery left pending
would be waited on for ever, and nobody would hear that a server was not moved."""

from __future__ import annotations

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.model import Host, Server
from tests.unit.recovery.support import Bmc, recover


class BrokenVim(MemoryVim):
    """Evacuates as the memory VIM does, except one server whose call blows up with an
    error no driver should let out (a client library's own exception, say)."""

    async def evacuate(self, server_id: str, target_host: str | None = None) -> Server:
        if server_id == "vm-broken":
            raise ConnectionResetError("Connection reset by peer")
        return await super().evacuate(server_id, target_host)


async def test_an_unexpected_error_fails_its_server_and_the_others_still_move() -> None:
    hosts = [Host("compute1", "127.0.1.1", forced_down=True), Host("compute2", "127.0.1.2")]
    servers = [
        Server("vm-ok", "ok", "compute1", "project-a", "ERROR"),
        Server("vm-broken", "broken", "compute1", "project-a", "ERROR"),
    ]
    vim = BrokenVim(hosts, servers)
    fault = await recover(vim, servers, bmc=Bmc())
    items = {i.server_id: i for i in fault.recovery}
    assert (items["vm-ok"].result, items["vm-ok"].to_host) == ("ok", "compute2")
    assert items["vm-broken"].result == "failed"
    assert items["vm-broken"].error == "Connection reset by peer"
    assert all(i.finished is not None for i in items.values())
