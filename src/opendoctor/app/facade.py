"""The API's view of a running service (`api.facade.Facade`), answered by its blocks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opendoctor.core.audit import AuditEntry, AuditQuery
from opendoctor.core.faults import Fault
from opendoctor.core.model import Event, Host, Server
from opendoctor.core.notifications import OutboxEntry
from opendoctor.core.settings import Role, Settings
from opendoctor.infra.live import Hub
from opendoctor.inspector.graph import RxGraph, topology_file
from opendoctor.inspector.templates import Plan, Template
from opendoctor.inspector.templates.registry import Installed
from opendoctor.maintenance.service import Maintenance
from opendoctor.monitor.masakari_intake import NotificationIntake
from opendoctor.notifier.alarms import AlarmService
from opendoctor.store.fence_devices import FenceDeviceStore
from opendoctor.store.haas import HaasStore
from opendoctor.store.paging import UnknownMarker
from opendoctor.store.segments import SegmentStore
from opendoctor.workflow.service import Workflows

if TYPE_CHECKING:
    from opendoctor.app.guestlink import GuestLinkPart
    from opendoctor.app.service import Service


class ServiceFacade:
    def __init__(self, service: Service) -> None:
        self._service = service

    # --- the process ---------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._service.settings

    @property
    def roles(self) -> frozenset[Role]:
        return self._service.roles

    @property
    def started(self) -> bool:
        return self._service.started

    def runs(self, *roles: Role) -> bool:
        return self._service.runs(*roles)

    @property
    def keeps_graph(self) -> bool:
        return self._service.mirror is not None or self._service.runs("inspector")

    async def start(self) -> None:
        await self._service.start()

    async def stop(self) -> None:
        await self._service.stop()

    def health(self) -> dict[str, Any]:
        service = self._service
        return {
            "roles": sorted(service.roles),
            "consuming": service.consuming(),
            "probing": service.probing.prober is not None,
            "hosts": len(service.topology.hosts),
            "servers": len(service.topology.servers),
            "alarms": len(service.index),
        }

    # --- resources and events ------------------------------------------------------------

    def hosts(self) -> Mapping[str, Host]:
        return self._service.topology.hosts

    def servers(self) -> Mapping[str, Server]:
        return self._service.topology.servers

    def servers_on(self, host: str) -> Collection[Server]:
        return self._service.topology.servers_on(host)

    async def submit(self, events: list[Event]) -> None:
        await self._service.submit(events)

    async def recent_events(self, limit: int, marker: str | None = None) -> list[dict[str, Any]]:
        return await self._service.events.recent(limit, marker)

    # --- faults and their notifications --------------------------------------------------

    async def faults(
        self, status: str | None, limit: int, marker: str | None = None
    ) -> list[Fault]:
        service = self._service
        if status == "active" and service.runs("inspector"):
            # Active faults live in the inspector: no database round trip while they unfold.
            # In the store's order: newest first, then by id.
            active = sorted(service.inspector.active.values(), key=lambda f: (-f.started, f.id))
            if marker is not None:
                at = next((i for i, f in enumerate(active) if f.id == marker), None)
                if at is None:
                    raise UnknownMarker(marker)
                active = active[at + 1 :]
            return await self._with_t09(active[:limit])
        found = await service.faults.list(status=status, limit=limit, marker=marker)
        return await self._with_t09(found)

    async def fault(self, fault_id: str) -> Fault | None:
        service = self._service
        fault = None
        if service.runs("inspector"):
            fault = next((f for f in service.inspector.active.values() if f.id == fault_id), None)
        if fault is None:
            fault = await service.faults.get(fault_id)
        return None if fault is None else (await self._with_t09([fault]))[0]

    async def _with_t09(self, faults: list[Fault]) -> list[Fault]:
        """Where the notifiers run in other processes than the inspector, T09 comes from
        the outbox: the newest delivery of the fault's notifications that succeeded at the
        first attempt."""
        missing = [f.id for f in faults if "T09" not in f.trace]
        if self._service.runs("notifier") or not missing:
            return faults
        delivered = await self._service.outbox.first_delivered(missing)
        shown = []
        for fault in faults:
            if fault.id in delivered and "T09" not in fault.trace:
                fault = replace(fault, trace=dict(fault.trace))  # not the inspector's own
                fault.mark("T09", delivered[fault.id])
            shown.append(fault)
        return shown

    async def notifications(
        self,
        fault_id: str | None = None,
        status: str | None = None,
        limit: int = 1000,
        marker: str | None = None,
    ) -> list[OutboxEntry]:
        return await self._service.outbox.list(fault_id, status, limit, marker)

    @property
    def alarms(self) -> AlarmService:
        return self._service.alarms

    @property
    def live(self) -> Hub:
        return self._service.live

    # --- the entity graph ----------------------------------------------------------------

    @property
    def graph(self) -> RxGraph:
        return self._service.graph

    def alarm_keys(self) -> set[str]:
        return self._service.fault_graph.alarms | self._service.engine.alarms.keys()

    def alarm_history(self, limit: int) -> list[dict[str, Any]]:
        return self._service.alarm_history.recent(limit)

    def owned_by_vim(self, key: str) -> bool:
        return self._service.graph_feed.owns(key)

    async def add_topology(self, body: topology_file.TopologyIn) -> topology_file.Loaded:
        return await self._service.topology_sync.add(body)

    async def remove_vertex(self, key: str) -> None:
        await self._service.topology_sync.remove(key)

    # --- rule templates ------------------------------------------------------------------

    def templates(self) -> Mapping[str, Installed]:
        return self._service.templates.installed

    def template_matches(self) -> Counter[str]:
        return Counter(key[0] for key in self._service.engine.matches)

    async def validate_template(self, text: str) -> Template:
        return await self._service.templates.validate(text)

    async def put_template(self, text: str) -> tuple[Installed, bool, Plan]:
        return await self._service.put_template(text)

    async def delete_template(self, name: str) -> Installed | None:
        return await self._service.delete_template(name)

    # --- instance HA (Masakari) -------------------------------------------------------------

    @property
    def segments(self) -> SegmentStore:
        return self._service.segments

    @property
    def ha_notifications(self) -> NotificationIntake:
        return self._service.ha_notifications

    @property
    def fence_devices(self) -> FenceDeviceStore | None:
        return self._service.fence_devices

    @property
    def haas(self) -> HaasStore:
        return self._service.haas

    @property
    def hostlink(self) -> GuestLinkPart | None:
        return self._service.guestlink_part

    @property
    def workflows(self) -> Workflows | None:
        return self._service.workflow_part.workflows

    @property
    def maintenance(self) -> Maintenance | None:
        # Looked up, not assumed: a process built without the maintenance part has none.
        part = getattr(self._service, "maintenance_part", None)
        found = getattr(part, "service", None)
        return found if isinstance(found, Maintenance) else None

    # --- the audit trail -------------------------------------------------------------------

    async def record_audit(self, entry: AuditEntry) -> None:
        await self._service.audit.add(entry)

    async def audit_log(self, query: AuditQuery) -> list[AuditEntry]:
        return await self._service.audit.list(query)
