"""A host's part of a session once it is empty: marked in maintenance, its actions run
(a power cycle, a workflow, nothing), waited for until the VIM has it up, enabled again
and returned; and, after a cancel or a failure, put back in service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from opendoctor.core.maintenance import (
    HOST_DRAINING,
    HOST_FAILED,
    HOST_IN_MAINTENANCE,
    HOST_RETURNED,
    HOST_WAITING,
    IN_MAINTENANCE,
    MAINTENANCE_COMPLETE,
    Session,
)
from opendoctor.core.ports import VimError
from opendoctor.infra import metrics
from opendoctor.maintenance.owners import Owners
from opendoctor.maintenance.reach import Reach, Stop, wait_until


class HostWork:
    def __init__(
        self,
        reach: Reach,
        session: Session,
        owners: Owners,
        save: Callable[[], Awaitable[None]],
        event: Callable[[], asyncio.Event],
    ) -> None:
        self.reach = reach
        self.session = session
        self.owners = owners
        self.save = save
        self.event = event

    async def maintain(self, host: str) -> None:
        session = self.session
        progress = session.host_progress[host]
        progress.state = HOST_IN_MAINTENANCE
        self.reach.mark(host, True)
        session.note(f"{host}: in maintenance")
        await self.save()
        await self.owners.host_notice(host, IN_MAINTENANCE)
        try:
            for action in session.actions or [self._default_action()]:
                plugin = str(action.get("plugin"))
                maintainer = self.reach.maintainers.get(plugin)
                if maintainer is None:
                    raise Stop(f"no host action {plugin!r} here")
                await maintainer.maintain(host, dict(action.get("metadata") or {}))
            await self._back_up(host)
        except Stop as exc:
            progress.state, progress.error = HOST_FAILED, str(exc)
            metrics.MAINTENANCE_HOSTS.labels("failed").inc()
            raise
        except Exception as exc:
            progress.state, progress.error = HOST_FAILED, f"{exc.__class__.__name__}: {exc}"
            metrics.MAINTENANCE_HOSTS.labels("failed").inc()
            raise Stop(f"{host}: maintenance failed: {progress.error}") from exc
        await self.set_enabled(host, True)
        self.reach.mark(host, False)
        known = self.reach.hosts().get(host)
        progress.version_after = known.version if known is not None else None
        progress.state, progress.finished = HOST_RETURNED, time.time()
        metrics.MAINTENANCE_HOSTS.labels("returned").inc()
        session.note(f"{host}: back in service")
        await self.save()
        await self.owners.host_notice(host, MAINTENANCE_COMPLETE)

    def _default_action(self) -> dict[str, object]:
        name = self.reach.settings.default_host_action
        if name.startswith("workflow:"):
            return {"plugin": "workflow", "metadata": {"workflow": name.split(":", 1)[1]}}
        return {"plugin": name, "metadata": {}}

    async def _back_up(self, host: str) -> None:
        """The VIM has the host up again (it may have been powered off and on): asked
        directly, as the change feed may not have brought the power-off yet."""

        async def up() -> bool:
            try:
                hosts = {h.name: h for h in await self.reach.vim().list_hosts()}
            except VimError:
                return False
            known = hosts.get(host)
            return known is not None and known.state == "up" and not known.forced_down

        settings = self.reach.settings
        deadline = time.time() + settings.host_timeout
        if not await wait_until(up, deadline, self.event(), settings.step_interval):
            raise Stop(f"{host} not back up after {settings.host_timeout:.0f} s")
        # The VIM may say up before the monitors have even noticed the host went off:
        # it stays marked for as long as they take to notice, then until they hear it.
        await asyncio.sleep(self.reach.settle)

        async def heard() -> bool:
            return self.reach.heard(host)

        if not await wait_until(heard, deadline, self.event(), settings.step_interval):
            raise Stop(f"{host}: its monitor has not heard it since it went down")

    async def set_enabled(self, host: str, enabled: bool) -> None:
        try:
            await self.reach.vim().set_host_enabled(host, enabled)
        except VimError as exc:
            verb = "enable" if enabled else "disable"
            raise Stop(f"the VIM did not {verb} {host}: {exc}") from exc

    async def back_in_service(self) -> None:
        """After a cancel or a failure: a host taken out and not returned goes back."""
        for host, progress in self.session.host_progress.items():
            if progress.state in (HOST_DRAINING, HOST_IN_MAINTENANCE, HOST_FAILED):
                self.reach.mark(host, False)
                try:
                    await self.reach.vim().set_host_enabled(host, True)
                except VimError as exc:
                    self.session.note(f"{host}: could not be enabled again: {exc}")
                if progress.state == HOST_DRAINING:
                    progress.state = HOST_WAITING
