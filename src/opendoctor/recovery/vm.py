"""Recovery of one failed server on a healthy host: restart it in place, then move it.

A server's fault (its process exited, its guest went silent or says it is unhealthy)
is handled by the rules first: its owner is told and the VIM sets it to error. Once
that is settled the inspector hands the server here (`Inspector.recover_server`):

1. nothing is done if the fault cleared meanwhile (the server came back by itself), if
   its host is down (host recovery's job: it fences the host and evacuates all of its
   servers), or if a recovery of this server is already under way;
2. up to `attempts` restarts in place: stop, then start (a power cycle: a VM whose
   process died has nothing to shut down cleanly, and the VIM will not start a server
   it believes runs), each followed by its endpoint answering 200 within
   `serve_timeout`;
3. if no restart brought it back, a cold migration (`VimDriver.migrate`: the VIM's
   scheduler picks another host, and the server is started there if it arrived
   stopped), checked the same way. Not an evacuation: a VIM evacuates only the servers
   of a host it has down, and this host is up.

Every outcome (each restart, the move) is told to the server's owner as an event
`compute.instance.recovery`, which an Aodh event alarm on that type receives; the
fault carries one `RecoveryItem` for the server (its last action, how many calls, when
it served again, or why it did not).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

from opendoctor.core.faults import Fault, RecoveryItem
from opendoctor.core.model import Host, NotificationEvent, Server
from opendoctor.core.ports import NotifyTarget, VimDriver, VimError
from opendoctor.core.recovery_settings import VmRecoverySettings
from opendoctor.infra import metrics
from opendoctor.infra.httpclient import HttpClient
from opendoctor.recovery.serving import wait_serving

log = logging.getLogger(__name__)

RECOVERY_EVENT = "compute.instance.recovery"
RESTART, MIGRATE = "restart", "migrate"


class Stopped(Exception):
    """Recovery of a server stops without an outcome of its own: someone else's job now."""


class VmRecovery:
    def __init__(
        self,
        vim: VimDriver,
        http: HttpClient,
        settings: VmRecoverySettings,
        notify: NotifyTarget | None = None,
        host_of: Callable[[str], Host | None] | None = None,
        on_moved: Callable[[Server], None] | None = None,
    ) -> None:
        self.vim = vim
        self.http = http
        self.settings = settings
        self.notify = notify
        # The hosts as the service sees them (the topology); None: ask the VIM each time.
        self.host_of = host_of
        self.on_moved = on_moved
        # One bound for every fault: a storm of VM faults must not become a storm of
        # VIM calls.
        self.limit = asyncio.Semaphore(settings.concurrency)
        self._busy: set[str] = set()  # servers being recovered now

    async def __call__(self, fault: Fault, server: Server) -> None:
        if server.id in self._busy or any(i.server_id == server.id for i in fault.recovery):
            # Once per fault (an escalated fault is handed over again; a server that keeps
            # failing after its recovery must not be power-cycled in a loop), and never
            # two at once: a second one beside the first would stop what it started.
            log.info("server's recovery under way or done", extra={"server": server.id})
            return
        item = RecoveryItem(server.id, server.name, server.host, requested=time.time())
        fault.recovery.append(item)
        self._busy.add(server.id)
        try:
            async with self.limit:
                await self._recover(fault, server, item)
        except Stopped as exc:
            item.result, item.error = "cancelled", str(exc)
            log.info("server not recovered here", extra={"server": server.id, "why": str(exc)})
        except Exception as exc:
            # Whatever went wrong, the item ends and the owner hears: a recovery left
            # pending would be waited on for ever.
            item.result, item.error = "failed", str(exc) or exc.__class__.__name__
            log.error("VM recovery failed", extra={"server": server.id}, exc_info=exc)
            await self._tell(fault, server, item, "failed", item.error)
        finally:
            self._busy.discard(server.id)
            item.finished = time.time()
            metrics.RECOVERIES.labels(item.result).inc()

    async def _recover(self, fault: Fault, server: Server, item: RecoveryItem) -> None:
        if fault.status != "active":
            raise Stopped("the fault cleared before recovery began: it came back by itself")
        errors: list[str] = []
        for _ in range(self.settings.attempts):
            await self._check_host(server.host)
            self._begin(item, RESTART)
            try:
                await self._restart(server)
            except (VimError, TimeoutError) as exc:
                errors.append(f"restart {item.attempts}: {exc}")
                log.warning("restart failed", extra={"server": server.id, "error": str(exc)})
                await self._tell(fault, server, item, "failed", str(exc))
                continue
            await self._served(fault, server, item, server.host, "restarted in place")
            return
        if self.settings.migrate:
            await self._check_host(server.host)
            self._begin(item, MIGRATE)
            try:
                moved = await self._migrate(server, item)
            except (VimError, TimeoutError) as exc:
                errors.append(f"migrate: {exc}")
                await self._tell(fault, server, item, "failed", str(exc))
            else:
                await self._served(fault, server, item, moved.host, f"moved to {moved.host}")
                return
        item.result, item.error = "failed", "; ".join(errors)
        log.error("server not recovered", extra={"server": server.id, "error": item.error})
        await self._back_to_error(fault, server)

    @staticmethod
    def _begin(item: RecoveryItem, action: str) -> None:
        item.action = action
        item.attempts += 1
        if not item.started:
            item.started = time.time()

    async def _check_host(self, name: str) -> None:
        """Raise `Stopped` if the host is down: its servers are host recovery's then, and
        a restart there would fail or, worse, race the evacuation."""
        if self.host_of is not None:
            host = self.host_of(name)
        else:
            host = next((h for h in await self.vim.list_hosts() if h.name == name), None)
        if host is not None and (host.forced_down or host.state != "up"):
            raise Stopped(f"host {name} is down: host recovery takes its servers")

    async def _restart(self, server: Server) -> None:
        try:
            await self.vim.stop(server.id)
        except VimError as exc:
            # Stopped already (a start that failed last time): starting is what counts,
            # and if the VIM cannot, the start says why.
            if exc.status != 409:
                raise
            log.info("stop refused; starting", extra={"server": server.id, "error": str(exc)})
        await self.vim.start(server.id)
        if server.endpoint:
            await wait_serving(self.http, server.endpoint, self.settings.serve_timeout)

    async def _migrate(self, server: Server, item: RecoveryItem) -> Server:
        moved = await self.vim.migrate(server.id)
        item.to_host = moved.host
        if self.on_moved is not None:
            self.on_moved(moved)
        if moved.status == "SHUTOFF":
            # A cold migration keeps a stopped server stopped (its last start failed).
            await self.vim.start(server.id)
        endpoint = moved.endpoint or server.endpoint
        if endpoint:
            await wait_serving(self.http, endpoint, self.settings.serve_timeout)
        return moved

    async def _served(
        self, fault: Fault, server: Server, item: RecoveryItem, host: str, how: str
    ) -> None:
        item.result, item.to_host, item.serving = "ok", host, time.time()
        log.info("server recovered", extra={"server": server.id, "action": item.action})
        await self._tell(fault, server, item, "ok", f"{how}; serving again", host)

    async def _back_to_error(self, fault: Fault, server: Server) -> None:
        """A server left not serving is in error again, as the rules had it (a start may
        have made it ACTIVE), while its fault lasts."""
        if fault.status != "active":
            return
        try:
            await self.vim.reset_state(server.id, "error")
        except VimError as exc:
            log.warning("not set back to error", extra={"server": server.id, "error": str(exc)})

    async def _tell(
        self,
        fault: Fault,
        server: Server,
        item: RecoveryItem,
        result: str,
        reason: str,
        host: str | None = None,
    ) -> None:
        """Tell the owner of one outcome; a notifier that fails must not end the recovery."""
        if self.notify is None:
            return
        action = item.action or RESTART
        # Stable per outcome: a notification sent again is recognisably the same one.
        seed = f"{fault.id}/recovery/{server.id}/{item.attempts}/{action}/{result}"
        event = NotificationEvent.build(
            RECOVERY_EVENT,
            fault_id=fault.id,
            message_id=str(uuid.uuid5(uuid.NAMESPACE_OID, seed)),
            instance_id=server.id,
            project_id=server.project_id,
            tenant_id=server.project_id,
            host=host or item.to_host or server.host,
            action=action,
            result=result,
            attempt=item.attempts,
            reason=reason,
        )
        cause = {
            "fault_id": fault.id,
            "event_type": fault.type,
            "hostname": fault.hostname,
            "instance_id": server.id,
        }
        try:
            await self.notify.notify_many([([event], cause)])
        except Exception as exc:
            log.error("recovery outcome not sent", extra={"server": server.id, "error": str(exc)})
