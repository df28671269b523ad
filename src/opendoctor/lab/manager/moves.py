"""Servers moved between hosts: cold migration, live migration and evacuation.

Each move holds the server's lock, asks the lab's scheduler for a target (the one
requested, or the least loaded usable host), stops the VM where it was and starts it on
the target with the same address, and only then changes the record the VIM shows. A
migration that cannot start the VM on its target starts it where it was rather than
lose it; an evacuation (its host is dead, or forced down) has nowhere to go back to.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from opendoctor.lab.manager.placement import size_of
from opendoctor.lab.manager.records import HostRecord, LabError, ServerRecord

if TYPE_CHECKING:
    from opendoctor.lab.manager.state import Lab

log = logging.getLogger("opendoctor.lab.manager")


async def migrate(lab: Lab, server_id: str, target_host: str | None = None) -> ServerRecord:
    """Move a server off its (running) host; an ACTIVE one is stopped there and started on
    the target, a stopped one only changes host."""
    server = lab.server(server_id)
    async with lab.lock(server_id):
        source = lab.host(server.host)
        if not source.alive:
            raise LabError(409, f"source host {source.name} is not running; evacuate instead")
        if server.status not in ("ACTIVE", "SHUTOFF"):
            raise LabError(409, f"cannot migrate a server in status {server.status}")
        target = lab.target(target_host, source.name, size_of(server))
        if server.status == "ACTIVE":
            await _move_vm(lab, server, source, target)
        server.host = target.name
        lab.emit_server(server)
    return server


async def live_migrate(lab: Lab, server_id: str, target_host: str | None = None) -> ServerRecord:
    """Move a running server to another host; its record stays ACTIVE throughout.

    The lab's VMs hold no memory worth copying and keep their address wherever they
    run, so the move is the VM's process handing over to a new one on the target:
    clients see one short gap (the new process starting), never a stopped server.
    """
    server = lab.server(server_id)
    async with lab.lock(server_id):
        source = lab.host(server.host)
        if not source.alive:
            raise LabError(409, f"source host {source.name} is not running; evacuate instead")
        if server.status != "ACTIVE":
            raise LabError(409, f"cannot live-migrate a server in status {server.status}")
        target = lab.target(target_host, source.name, size_of(server))
        started = time.monotonic()
        await _move_vm(lab, server, source, target)
        server.host = target.name
        lab.emit_server(server)
        log.info(
            "live-migrated %s from %s to %s in %.3f s",
            server.name, source.name, target.name, time.monotonic() - started,
        )  # fmt: skip
    return server


async def _move_vm(lab: Lab, server: ServerRecord, source: HostRecord, target: HostRecord) -> None:
    """The running VM from `source` to `target` (the address follows it)."""
    async with lab.placement.placing(target.name, size_of(server)):
        await lab.halt_vm(source, server)
        try:
            await lab.run_vm(target, server)
        except LabError:
            # Put it back where it was rather than lose it.
            with contextlib.suppress(LabError):
                await lab.run_vm(source, server)
            raise


async def evacuate(lab: Lab, server_id: str, target_host: str | None = None) -> ServerRecord:
    """Start the server of a dead or forced-down host on another host, ACTIVE again."""
    server = lab.server(server_id)
    async with lab.lock(server_id):
        source = lab.host(server.host)
        if source.alive and not source.forced_down:
            raise LabError(
                409, f"host {source.name} is up; force it down before evacuating its servers"
            )
        target = lab.target(target_host, source.name, size_of(server))
        started = time.monotonic()
        async with lab.placement.placing(target.name, size_of(server)):
            # A forced-down host may still run the VM; it must let go of the address.
            with contextlib.suppress(LabError):
                await lab.halt_vm(source, server)
            await lab.run_vm(target, server)
        server.host = target.name
        server.status = "ACTIVE"
        lab.emit_server(server)
        log.info(
            "evacuated %s from %s to %s in %.3f s",
            server.name, source.name, target.name, time.monotonic() - started,
        )  # fmt: skip
    return server
