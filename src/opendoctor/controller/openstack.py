"""The `openstack` VIM driver: `VimDriver` over Nova's API, through openstacksdk.

openstacksdk is synchronous. Every call runs on a small thread pool of this driver's
own, so that the event loop never waits on Nova, and so that a Nova that hangs holds
up at most `workers` calls, never the handling of the next event (DESIGN §1: the
owners are told before the VIM is asked anything).

What it needs from the cloud: an admin (or a role the policy lets) for all-projects
server lists, service force-down (microversion 2.53 or later), reset-state, evacuate and
migrate; see docs/openstack.md. The session comes from `clouds.yaml` (`vim.openstack.
cloud`, or `OS_CLOUD`) or from the `OS_*` variables, as every OpenStack client's does.

Changes: Nova's versioned notifications on its RabbitMQ (`notifications_url`), as they
come; and a poll every `poll_interval` seconds, servers by `changes-since` (which also
reports deleted ones) and compute services whole, reporting what differs from the last
poll, which catches whatever the notifications missed. A server's change older than one
already reported (a notification overtaken, a poll read before it) is dropped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from opendoctor.controller.batches import reset_each
from opendoctor.controller.nova_notifications import Newest, NovaNotifications, Stamped
from opendoctor.core.model import Host, Server, ServerGroup, VimChange
from opendoctor.core.ports import VimError
from opendoctor.core.settings import OpenStackSettings
from opendoctor.infra.amqp import AmqpError

if TYPE_CHECKING:
    from openstack.connection import Connection

log = logging.getLogger(__name__)

T = TypeVar("T")
COMPUTE = "nova-compute"
# The oldest microversion with everything used here: forced_down by service id (2.53).
MIN_MICROVERSION = "2.53"
# How often an evacuation in progress is looked at: it takes seconds, a poll costs a GET.
ACTION_POLL = 0.25
CONNECT_RETRIES = 3


def connect(settings: OpenStackSettings, check: bool = False) -> Connection:
    """A connection from clouds.yaml or the OS_* variables (raises `VimError`); with
    `check`, authenticated at once, so that bad credentials show at start."""
    try:
        import openstack
        from openstack import exceptions
    except ImportError as exc:
        raise VimError(
            "vim.driver = openstack needs the extra: pip install 'opendoctor[openstack]'"
        ) from exc
    try:
        conn = openstack.connect(
            cloud=settings.cloud,
            region_name=settings.region,
            compute_api_version=settings.compute_microversion,
            app_name="opendoctor",
            # A busy API resets kept-alive connections: try a request again on a fresh one.
            connect_retries=CONNECT_RETRIES,
        )
        if check:
            conn.authorize()
    except exceptions.SDKException as exc:
        raise VimError(f"cannot connect to OpenStack: {exc}") from exc
    return conn


def _status(exc: BaseException) -> int:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else 503


class OpenStackDriver:
    """A `VimDriver` for Nova. Every call may raise `VimError`."""

    def __init__(self, conn: Connection, settings: OpenStackSettings) -> None:
        self.conn = conn
        self.settings = settings
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="nova")
        self._services: dict[str, str] = {}  # host -> its nova-compute service id
        self._hosts_seen: dict[str, Host] = {}  # as the last read of Nova had them

    @property
    def hosts_seen(self) -> dict[str, Host]:
        """The hosts as the last read of Nova had them (empty before the first)."""
        return dict(self._hosts_seen)

    @classmethod
    def from_settings(cls, settings: OpenStackSettings) -> OpenStackDriver:
        return cls(connect(settings), settings)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from keystoneauth1 import exceptions as ksa
        from openstack import exceptions

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except exceptions.SDKException as exc:
            raise VimError(f"Nova: {exc}", _status(exc)) from exc
        except ksa.ClientException as exc:  # no answer (refused, reset, timed out)
            raise VimError(f"Nova: {exc}", 503) from exc

    # -- reading ------------------------------------------------------------------------

    def _hosts(self) -> list[Host]:
        compute = self.conn.compute
        hypervisors = {
            h.service_details.get("host") if h.service_details else h.name: h
            for h in compute.hypervisors(details=True)
        }
        hosts = []
        for svc in compute.services(binary=COMPUTE):
            self._services[svc.host] = svc.id
            hypervisor = hypervisors.get(svc.host)
            version = getattr(hypervisor, "hypervisor_version", None)
            hosts.append(
                Host(
                    name=svc.host,
                    address=getattr(hypervisor, "host_ip", None) or "",
                    heartbeat_port=self.settings.heartbeat_port,
                    state=svc.state or "down",
                    forced_down=bool(svc.is_forced_down),
                    enabled=svc.status == "enabled",
                    version="" if version is None else str(version),
                )
            )
        self._hosts_seen = {h.name: h for h in hosts}
        return hosts

    async def list_hosts(self) -> list[Host]:
        return await self._call(self._hosts)

    @staticmethod
    def _server(s: Any) -> Server:
        return Server(
            id=s.id,
            name=s.name or "",
            host=s.compute_host or "",
            project_id=s.project_id or "",
            status=s.status or "UNKNOWN",
            metadata={str(k): str(v) for k, v in (s.metadata or {}).items()},
            # The flavor as embedded in the server (2.47 on); without it, unknown (0).
            vcpus=int(_flavor(s, "vcpus")),
            ram_mb=int(_flavor(s, "ram")),
        )

    def _servers(self, **query: Any) -> list[Any]:
        return list(self.conn.compute.servers(details=True, all_projects=True, **query))

    async def list_servers(self) -> list[Server]:
        found = await self._call(self._servers)
        return [self._server(s) for s in found]

    # -- changing -----------------------------------------------------------------------

    async def _service_id(self, host: str) -> str:
        if host not in self._services:
            await self.list_hosts()
        try:
            return self._services[host]
        except KeyError:
            raise VimError(f"Nova has no {COMPUTE} service on host {host!r}", 404) from None

    async def force_down(self, host: str, down: bool) -> None:
        service = await self._service_id(host)
        await self._call(self.conn.compute.update_service_forced_down, service, forced=down)

    async def set_host_enabled(self, host: str, enabled: bool) -> None:
        service = await self._service_id(host)
        if enabled:
            await self._call(self.conn.compute.enable_service, service)
        else:
            await self._call(
                self.conn.compute.disable_service, service, disabled_reason="opendoctor"
            )

    async def reset_state(self, server_id: str, state: str) -> None:
        await self._call(self.conn.compute.reset_server_state, server_id, state)

    async def reset_states(self, server_ids: Sequence[str], state: str) -> dict[str, str]:
        # Nova has no batch: one request each, as many at once as the pool runs.
        return await reset_each(self.reset_state, server_ids, state)

    # Nova answers these as soon as it has cast the work; each returns once it is done
    # (the `VimDriver` contract: a start sent while the stop runs would be refused).

    async def stop(self, server_id: str) -> None:
        await self._call(self.conn.compute.stop_server, server_id)
        await self._idle(server_id, "stop", {"SHUTOFF"})

    async def start(self, server_id: str) -> None:
        await self._call(self.conn.compute.start_server, server_id)
        await self._idle(server_id, "start", {"ACTIVE"})

    async def _now(self, server_id: str) -> Server:
        return self._server(await self._call(self.conn.compute.get_server, server_id))

    async def migrate(self, server_id: str, target_host: str | None = None) -> Server:
        """A cold migration, confirmed: the server on its new host, as it was (running or
        stopped)."""
        source = (await self._now(server_id)).host
        await self._call(self.conn.compute.migrate_server, server_id, host=target_host)
        moved = await self._idle(server_id, "migration", {"VERIFY_RESIZE", "ACTIVE", "SHUTOFF"})
        if moved.status == "VERIFY_RESIZE":  # unless Nova confirms by itself
            await self._call(self.conn.compute.confirm_server_resize, server_id)
            # The status stays VERIFY_RESIZE, with no task, until the compute confirms.
            moved = await self._idle(server_id, "migration", {"ACTIVE", "SHUTOFF"}, "VERIFY_RESIZE")
        if moved.host == source:  # no host would take it: Nova put it back
            raise VimError(f"Nova's migration of {server_id} left it on {source}", 409)
        return moved

    async def _idle(self, server_id: str, what: str, wanted: set[str], still: str = "") -> Server:
        """The server once Nova has no task running on it, in one of the `wanted`
        statuses (`still`: a status that means not yet); otherwise `VimError` with
        Nova's account of what went wrong."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.action_timeout
        while True:
            now = await self._call(self.conn.compute.get_server, server_id)
            server = self._server(now)
            if now.task_state is None and server.status != still:
                if server.status in wanted:
                    return server
                fault = _fault_message(now)
                raise VimError(
                    f"Nova's {what} of {server_id} left it {server.status}"
                    + (f" ({fault})" if fault else "")
                )
            if loop.time() > deadline:
                raise VimError(
                    f"Nova's {what} of {server_id} still {now.task_state or server.status} after "
                    f"{self.settings.action_timeout:.0f}s",
                    504,
                )
            await asyncio.sleep(ACTION_POLL)

    async def live_migrate(self, server_id: str, target_host: str | None = None) -> Server:
        """A live migration, waited for: the server running on its new host. A migration
        that fails leaves it running on its source (Nova rolls back): `VimError`."""
        source = (await self._now(server_id)).host
        await self._call(
            self.conn.compute.live_migrate_server,
            server_id,
            host=target_host,
            block_migration="auto",
        )
        moved = await self._idle(server_id, "live migration", {"ACTIVE", "PAUSED"}, "MIGRATING")
        if moved.host == source:  # no host would take it, or the copy failed
            raise VimError(f"Nova's live migration of {server_id} left it on {source}", 409)
        return moved

    async def evacuate(self, server_id: str, target_host: str | None = None) -> Server:
        """Evacuate and wait for Nova to finish: the API answers as soon as it has cast
        the rebuild, and the server is only somewhere else when its task state clears."""
        source = (await self._call(self.conn.compute.get_server, server_id)).compute_host
        await self._call(self.conn.compute.evacuate_server, server_id, host=target_host)
        return await self._settled(server_id, source, "evacuation")

    async def _settled(self, server_id: str, source: str | None, what: str) -> Server:
        """The server once Nova has no task running on it and runs off `source`;
        otherwise `VimError` with Nova's own account of what went wrong."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.action_timeout
        while True:
            now = await self._call(self.conn.compute.get_server, server_id)
            server = self._server(now)
            if now.task_state is None:
                if server.status in ("ACTIVE", "SHUTOFF") and server.host != source:
                    return server
                # Nova clears the task before it records the new host (seconds before,
                # on a busy compute host): its migration record says how it ended.
                ended = await self._evacuation(server_id)
                if ended is not None and ended.status in ("done", "completed"):
                    return replace(server, host=ended.dest_compute or server.host)
                if ended is not None and ended.status in ("error", "failed", "cancelled"):
                    fault = _fault_message(now)
                    raise VimError(
                        f"Nova's {what} of {server_id} {ended.status}: the server is "
                        f"{server.status} on {server.host or 'no host'}"
                        + (f" ({fault})" if fault else "")
                    )
            if loop.time() > deadline:
                raise VimError(
                    f"Nova's {what} of {server_id} still {now.task_state or server.status} "
                    f"on {server.host or 'no host'} after {self.settings.action_timeout:.0f}s",
                    504,
                )
            await asyncio.sleep(ACTION_POLL)

    async def _evacuation(self, server_id: str) -> Any:
        """The server's latest evacuation record in Nova, or None."""

        def latest() -> Any:
            found = self.conn.compute.migrations(server_id=server_id, migration_type="evacuation")
            return max(found, key=lambda m: m.created_at or "", default=None)

        return await self._call(latest)

    async def server_groups(self) -> list[ServerGroup]:
        """Every server group of every project, with its members' ids (affinity and
        anti-affinity groups are what pairs of active and standby servers are placed
        with, and whom server-group messaging reaches)."""

        def groups() -> list[ServerGroup]:
            return [
                ServerGroup(
                    id=g.id,
                    name=g.name or "",
                    project_id=g.project_id or "",
                    # Microversion 2.64 made `policies` (a list) one `policy`.
                    policy=g.policy or next(iter(g.policies or []), ""),
                    members=tuple(g.member_ids or ()),
                )
                for g in self.conn.compute.server_groups(all_projects=True)
            ]

        return await self._call(groups)

    async def rebuild(self, server_id: str) -> Server:
        """Rebuild the server from its own image on its host, and wait until it is
        ACTIVE again (Nova answers as soon as it has cast the rebuild)."""
        now = await self._call(self.conn.compute.get_server, server_id)
        image = getattr(now.image, "id", None) if now.image else None
        if not image:
            # Booted from a volume: Nova rebuilds those only with an image given anew.
            raise VimError(f"server {server_id} has no image to rebuild from", 409)
        await self._call(self.conn.compute.rebuild_server, server_id, image)
        return await self._idle(server_id, "rebuild", {"ACTIVE"}, "REBUILD")

    # -- the change feed ----------------------------------------------------------------

    async def changes(self) -> AsyncIterator[VimChange]:
        """Nova's notifications as they come (if `notifications_url` is set), and a poll
        every `poll_interval` seconds that catches what they missed."""
        out: asyncio.Queue[Stamped] = asyncio.Queue()
        newest = Newest()
        tasks = [asyncio.create_task(_pump(self._poll(), out), name="nova-poll")]
        notes = await self._notifications()
        if notes is not None:
            tasks.append(asyncio.create_task(_pump(self._noted(notes), out), name="nova-notes"))
        try:
            while True:
                stamped = await out.get()
                if newest.admit(stamped):
                    yield stamped.change
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if notes is not None:
                await notes.close()

    async def _notifications(self) -> NovaNotifications | None:
        url = self.settings.notifications_url
        if url is None:
            return None
        notes = NovaNotifications(
            url.get_secret_value(),
            exchange=self.settings.notifications_exchange,
            heartbeat_port=self.settings.heartbeat_port,
        )
        try:
            await notes.start()
        except AmqpError as exc:
            log.warning(
                "Nova's notifications not followed; polling only", extra={"error": str(exc)}
            )
            await notes.close()
            return None
        return notes

    async def _noted(self, notes: NovaNotifications) -> AsyncIterator[Stamped]:
        async for stamped in notes.changes():
            change = stamped.change
            host = change.host
            if host is not None and not host.address:
                # The notification does not say where the host answers: keep what the
                # last read of Nova said, or the monitor would lose the host.
                known = self._hosts_seen.get(host.name)
                if known is None:
                    continue  # a host not read yet: the next poll brings it whole
                change = VimChange(
                    change.kind, change.op, host=replace(host, address=known.address)
                )
            yield Stamped(change, stamped.at)

    async def _poll(self) -> AsyncIterator[Stamped]:
        # The clock first: whatever changes once the first read began is reported.
        since = datetime.now(UTC)
        hosts = {h.name: h for h in await self.list_hosts()}
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            polled = datetime.now(UTC)
            try:
                fresh = {h.name: h for h in await self.list_hosts()}
                changed = await self._call(
                    self._servers, changes_since=since.isoformat(timespec="seconds")
                )
            except VimError as exc:
                log.warning("Nova not polled", extra={"error": str(exc)})
                continue
            since = polled
            # What was read is at least as new as the moment the reading began.
            at = polled.timestamp()
            for name, host in fresh.items():
                if hosts.get(name) != host:
                    yield Stamped(VimChange("host", "upsert", host=host), at)
            for name in hosts.keys() - fresh.keys():
                yield Stamped(VimChange("host", "delete", host=hosts[name]), at)
            hosts = fresh
            for s in changed:
                status = (s.status or "").upper()
                op = "delete" if status in ("DELETED", "SOFT_DELETED") else "upsert"
                yield Stamped(VimChange("server", op, server=self._server(s)), at)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.conn.close)


async def _pump(source: AsyncIterator[Stamped], out: asyncio.Queue[Stamped]) -> None:
    async for change in source:
        out.put_nowait(change)


def _flavor(server: Any, field: str) -> int:
    flavor = server.flavor
    value = flavor.get(field) if isinstance(flavor, dict) else getattr(flavor, field, None)
    return value if isinstance(value, int) else 0


def _fault_message(server: Any) -> str | None:
    """Nova's account of what went wrong with a server (its `fault`), if it gave one."""
    return server.fault.get("message") if isinstance(server.fault, dict) else None
