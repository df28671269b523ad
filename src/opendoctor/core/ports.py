"""The plug-in protocols, one per plug-in point, and the errors they may raise.

`VimDriver`: the one plug-in point between opendoctor and a VIM (implementations in
`opendoctor.controller`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from opendoctor.core.model import Host, Server, VimChange


class VimError(Exception):
    """A VIM refused or failed a request. `status` is the VIM's HTTP status when it has one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@runtime_checkable
class VimDriver(Protocol):
    """What opendoctor needs from a VIM. Every call may raise `VimError`."""

    async def list_hosts(self) -> list[Host]: ...

    async def list_servers(self) -> list[Server]: ...

    async def force_down(self, host: str, down: bool) -> None:
        """Mark a compute host's service down (or back up), as `nova service-force-down`."""

    async def set_host_enabled(self, host: str, enabled: bool) -> None:
        """Enable or disable scheduling onto a host."""

    async def reset_state(self, server_id: str, state: str) -> None:
        """Set a server's status, as `nova reset-state` (`error` or `active`)."""

    async def stop(self, server_id: str) -> None: ...

    async def start(self, server_id: str) -> None: ...

    async def migrate(self, server_id: str, target_host: str | None = None) -> Server: ...

    async def evacuate(self, server_id: str, target_host: str | None = None) -> Server:
        """Rebuild a server of a failed host on a healthy one; returns it as it is now."""

    def changes(self) -> AsyncIterator[VimChange]:
        """Changes to hosts and servers from now on, for as long as the caller iterates."""

    async def close(self) -> None: ...
