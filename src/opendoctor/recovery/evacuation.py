"""Recovery of a failed host's servers: choose them, fence the host, evacuate, check.

Runs after the owners are notified and the host is marked down (the VIM refuses to
evacuate from a host it still thinks is up). For each failed host:

1. its failover segment (if any) says the method and which servers are recovered (those
   with `HA_Enabled=True`, or all); a disabled segment or a host on maintenance is not
   recovered; a host in no segment has all its servers recovered by `default_method`;
2. the host is fenced, powered off and confirmed off (T05), by the guard: no server moves
   before, and if that never happens none moves at all (`recovery.guard`);
3. the servers go, in order of `HA_Priority`, to target hosts chosen up front within
   each host's capacity (`recovery.placement`), by the method's tiers
   (`recovery.methods`), bounded in parallel; one the VIM refuses goes to another host,
   up to `evacuate_attempts`; one that fits nowhere is reported at once;
4. each answers on its endpoint again (or times out).

Every server gets a `RecoveryItem`: when it was taken on, the first VIM call, where it
went after how many attempts, when it served, or why it failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from opendoctor.core.faults import Fault, RecoveryItem
from opendoctor.core.model import HOST_UNREACHABLE, Server
from opendoctor.core.ports import SegmentSource, VimDriver, VimError
from opendoctor.core.recovery_settings import RecoverySettings
from opendoctor.core.segments import SegmentView, opted_in, priority
from opendoctor.infra import metrics
from opendoctor.infra.httpclient import HttpClient
from opendoctor.recovery.guard import FenceGuard, Unfenced
from opendoctor.recovery.methods import Targets, targets
from opendoctor.recovery.placement import Placement
from opendoctor.recovery.serving import wait_serving

log = logging.getLogger(__name__)


class Recovery:
    def __init__(
        self,
        vim: VimDriver,
        http: HttpClient,
        settings: RecoverySettings,
        guard: FenceGuard,
        on_moved: Callable[[Server], None] | None = None,
        segments: SegmentSource | None = None,
        running: Callable[[str], list[Server]] | None = None,
    ) -> None:
        self.vim = vim
        self.http = http
        self.settings = settings
        self.guard = guard
        self.on_moved = on_moved
        self.segments = segments
        # What runs on a host now (the topology's view): capacity already taken.
        self.running = running or (lambda host: [])

    async def __call__(
        self, fault: Fault, servers: list[Server], settled: Awaitable[None] | None = None
    ) -> None:
        """Recover `servers` of the fault's failed hosts; `settled` ends once the VIM has
        the fault's marks (servers in error): fencing starts at once, moving after it."""
        if not servers:
            return  # nothing ran there: nothing to fence for, nothing to move
        ready = asyncio.ensure_future(settled) if settled is not None else None
        if fault.type == HOST_UNREACHABLE and self.settings.cut_link != "fence-and-evacuate":
            # A cut link: the host still runs its servers. Moving them would run each twice.
            log.info("cut link: nothing evacuated", extra={"host": fault.hostname})
            return
        by_host: dict[str, list[Server]] = {}
        for server in servers:
            by_host.setdefault(server.host, []).append(server)
        try:
            views = await asyncio.gather(*(self._segment(h) for h in by_host))
            hosts = await self.vim.list_hosts()
        except Exception as exc:
            # Without them nothing can be decided; the owners must hear it did not happen.
            log.error("recovery not started", extra={"fault": fault.id, "error": str(exc)})
            fault.recovery = [_failed(s, f"recovery not started: {exc}") for s in servers]
            return
        chosen: list[tuple[Server, str, SegmentView | None]] = []
        for (host, on_host), view in zip(by_host.items(), views, strict=True):
            method, picked = self._choose(host, on_host, view)
            chosen += [(s, method, view) for s in picked]
        chosen.sort(key=lambda c: priority(c[0].metadata))
        now = time.time()
        items = {
            s.id: RecoveryItem(
                server_id=s.id, name=s.name, from_host=s.host, requested=now, method=method
            )
            for s, method, _ in chosen
        }
        fault.recovery = list(items.values())
        if not items:
            # Nothing of these hosts is to be recovered (none opted in, a host on
            # maintenance): the recovery is over as it begins.
            fault.mark("T11", now)
            return
        failed = set(by_host)
        run = _Run(
            fault, Placement(hosts, self.running), asyncio.Semaphore(self.settings.concurrency)
        )

        async def host_work(host: str) -> None:
            mine = [(s, m, v) for s, m, v in chosen if s.host == host]
            if not await self._fence(fault, host, [items[s.id] for s, _, _ in mine]):
                return
            if ready is not None:
                await ready
            if fault.type == HOST_UNREACHABLE:  # the policy fences and evacuates cut links
                await self.vim.force_down(host, True)
            # Every first target chosen up front, in priority order (the best room to the
            # first servers), and the reserved hosts they need enabled before any call:
            # the calls then go out in priority order too.
            plans = [(s, targets(m, v, hosts, failed)) for s, m, v in mine]
            first = [_pick(run.placement, s, where, set()) for s, where in plans]
            needed = {t for t, (_, where) in zip(first, plans, strict=True) if t in where.reserved}
            await asyncio.gather(
                *(self._take_reserved(run, t) for t in sorted(needed)), return_exceptions=True
            )
            await asyncio.gather(
                *(
                    self._recover(run, items[s.id], s, where, target)
                    for (s, where), target in zip(plans, first, strict=True)
                )
            )

        await asyncio.gather(*(host_work(h) for h in sorted({s.host for s, _, _ in chosen})))

    async def _segment(self, host: str) -> SegmentView | None:
        return None if self.segments is None else await self.segments.segment_of(host)

    def _choose(
        self, host: str, servers: list[Server], view: SegmentView | None
    ) -> tuple[str, list[Server]]:
        """The method for `host`'s servers and those of them to recover."""
        if view is None:
            return self.settings.default_method, servers
        member = view.host(host)
        if not view.segment.enabled or (member is not None and member.on_maintenance):
            why = "its segment is disabled" if not view.segment.enabled else "on maintenance"
            log.warning("host not recovered: " + why, extra={"host": host})
            return view.segment.recovery_method, []
        picked = [s for s in servers if opted_in(s.metadata, view.segment.all_servers)]
        if len(picked) < len(servers):
            log.info(
                "servers without HA_Enabled=True are not recovered",
                extra={"host": host, "left": len(servers) - len(picked)},
            )
        return view.segment.recovery_method, picked

    async def _fence(self, fault: Fault, host: str, items: list[RecoveryItem]) -> bool:
        """Whether `host`'s servers may move: fenced (T05), or no fence needed."""
        # A cut link's host runs its servers for certain: never moved unfenced.
        if fault.type != HOST_UNREACHABLE and not await self.guard.needed(host):
            log.warning("evacuating without fencing: no fence device", extra={"host": host})
            return True
        try:
            confirmed = await self.guard.fence(fault, host)
        except Unfenced as exc:
            for item in items:
                # A host that may still run its servers: evacuating them would run each
                # twice. They stay where they are, and the record says why.
                item.started = item.finished = time.time()
                item.result = "cancelled" if fault.status != "active" else "failed"
                item.error = f"not evacuated: {exc}"
                metrics.RECOVERIES.labels(item.result).inc()
            return False
        fault.mark("T05", max(confirmed, fault.trace.get("T05", 0.0)))
        return True

    async def _recover(
        self, run: _Run, item: RecoveryItem, server: Server, where: Targets, first: str | None
    ) -> None:
        async with run.limit:
            try:
                await self._evacuate(run, item, server, where, first)
                if item.result == "pending":
                    item.result = "ok"
            except Exception as exc:
                # Whatever went wrong, the item ends: a recovery left pending would wait
                # for ever, and nobody would hear that this server was not moved.
                item.result = "failed"
                item.error = str(exc) or exc.__class__.__name__
                expected = isinstance(exc, (VimError, TimeoutError))
                log.error(
                    "evacuation failed",
                    extra={"server": item.server_id, "error": item.error},
                    exc_info=None if expected else exc,
                )
            metrics.RECOVERIES.labels(item.result).inc()
            item.finished = time.time()

    async def _evacuate(
        self, run: _Run, item: RecoveryItem, server: Server, where: Targets, first: str | None
    ) -> None:
        p = run.placement
        tried: set[str] = set()
        refused: list[str] = []
        target = first
        for _ in range(self.settings.evacuate_attempts):
            if target is None:
                break
            tried.add(target)
            if target in where.reserved:
                try:
                    await self._take_reserved(run, target)
                except VimError as exc:
                    p.release(server, target)
                    refused.append(f"{target}: not enabled: {exc}")
                    target = _pick(p, server, where, tried)
                    continue
            item.attempts += 1
            if not item.started:
                item.started = time.time()
                run.fault.mark("T06", item.started)
            try:
                moved = await self.vim.evacuate(server.id, target)
            except VimError as exc:
                p.release(server, target)
                refused.append(f"{target}: {exc}")
                log.warning(
                    "evacuation refused; trying another host",
                    extra={"server": server.id, "target": target, "error": str(exc)},
                )
                target = _pick(p, server, where, tried)
                continue
            item.to_host = moved.host
            if self.on_moved is not None:
                self.on_moved(moved)
            if moved.endpoint:
                await wait_serving(self.http, moved.endpoint, self.settings.serve_timeout)
            item.serving = time.time()
            return
        if refused:
            raise VimError(f"evacuation refused by every host tried: {'; '.join(refused)}")
        raise VimError(
            f"no room: no host of [{where.describe()}] can take {server.vcpus} vcpus and "
            f"{server.ram_mb} MB"
        )

    async def _take_reserved(self, run: _Run, host: str) -> None:
        """Enable a reserved host in the VIM (once per recovery, whoever asks first) and
        mark it reserved no more: it now runs servers."""
        task = run.enabling.get(host)
        if task is None:
            task = run.enabling[host] = asyncio.ensure_future(self._enable(host))
        await asyncio.shield(task)

    async def _enable(self, host: str) -> None:
        await self.vim.set_host_enabled(host, True)
        if self.segments is not None:
            view = await self.segments.segment_of(host)
            if view is not None:
                await self.segments.set_reserved(view.segment.id, host, False)
        log.info("reserved host taken into use", extra={"host": host})


@dataclass(slots=True)
class _Run:
    """One recovery's shared state: the fault, the room left on the targets, the bound
    on parallel evacuations, the reserved hosts being enabled."""

    fault: Fault
    placement: Placement
    limit: asyncio.Semaphore
    enabling: dict[str, asyncio.Future[None]] = field(default_factory=dict)


def _failed(server: Server, reason: str) -> RecoveryItem:
    now = time.time()
    item = RecoveryItem(server.id, server.name, server.host, requested=now, finished=now)
    item.result, item.error = "failed", reason
    metrics.RECOVERIES.labels("failed").inc()
    return item


def _pick(placement: Placement, server: Server, where: Targets, tried: set[str]) -> str | None:
    """The first tier's best host with room for `server` (taken for it), or None."""
    for tier in where.tiers:
        target = placement.choose(server, tier, tried)
        if target is not None:
            return target
    return None
