"""`core.ports.GuestLink` over the router: the service's way to the guest agents, through
the host link of the host each server runs on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping

from opendoctor.core.model import ServiceHealth
from opendoctor.core.ports import GuestLinkError
from opendoctor.heartbeat.router import Router

MAX_STATE = 64


class RoutedGuestLink:
    def __init__(self, router: Router, timeout_most: float = 600.0) -> None:
        self.router = router
        self.timeout_most = timeout_most

    def services(self, server_id: str) -> Mapping[str, ServiceHealth]:
        return dict(self.router.services.get(server_id, {}))

    async def restart_service(self, server_id: str, service: str, timeout: float) -> None:
        if not 0 < timeout <= self.timeout_most:
            raise GuestLinkError(f"a restart timeout must be in (0, {self.timeout_most:g}] s")
        request_id = str(uuid.uuid4())
        waiting: asyncio.Future[tuple[bool, str | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self.router.restarts[request_id] = waiting
        try:
            down = {
                "type": "restart-service",
                "service": service,
                "request_id": request_id,
                "timeout": timeout,
            }
            if not self.router.send_to(server_id, down):
                raise GuestLinkError(
                    f"server {server_id}: its host is not connected to this service, or "
                    "does not keep up"
                )
            try:
                # The agent's own timeout runs the command; a little more for the trip.
                ok, reason = await asyncio.wait_for(waiting, timeout + 5.0)
            except TimeoutError:
                raise GuestLinkError(
                    f"server {server_id}: no answer to the restart of {service} "
                    f"within {timeout + 5.0:g} s"
                ) from None
        finally:
            self.router.restarts.pop(request_id, None)
        if not ok:
            raise GuestLinkError(f"server {server_id}: restart of {service} failed: {reason}")

    async def announce(self, server_id: str, state: str, reason: str | None = None) -> None:
        if not 0 < len(state) <= MAX_STATE or not state.isprintable():
            raise GuestLinkError(f"a peer state is 1 to {MAX_STATE} printable characters")
        self.router.announce(server_id, state, reason)
