"""What the API asks of the service it serves, and nothing more.

The routers see the running service only through `Facade`: questions (which hosts,
which faults, which templates) and commands (accept these events, add this template).
How a process is wired, and which block answers, is `opendoctor.app`'s business
(`app.facade.ServiceFacade` implements this over `app.service.Service`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from opendoctor.core.audit import AuditEntry, AuditQuery
from opendoctor.core.faults import Fault
from opendoctor.core.model import Event, Host, Server
from opendoctor.core.notifications import OutboxEntry
from opendoctor.core.settings import Role, Settings
from opendoctor.infra.live import Hub
from opendoctor.inspector.graph import RxGraph
from opendoctor.inspector.graph.topology_file import Loaded, TopologyIn
from opendoctor.inspector.templates import Plan, Template
from opendoctor.inspector.templates.registry import Installed
from opendoctor.maintenance.service import Maintenance
from opendoctor.monitor.masakari_intake import NotificationIntake
from opendoctor.notifier.alarms import AlarmService
from opendoctor.store.fence_devices import FenceDeviceStore
from opendoctor.store.haas import HaasStore
from opendoctor.store.segments import SegmentStore
from opendoctor.workflow.service import Workflows

if TYPE_CHECKING:
    from opendoctor.api.hostlink import HostLink


class Facade(Protocol):
    # --- the process ---------------------------------------------------------------------

    @property
    def settings(self) -> Settings: ...

    @property
    def roles(self) -> frozenset[Role]: ...

    @property
    def started(self) -> bool: ...

    def runs(self, *roles: Role) -> bool:
        """Whether this process runs any of these roles."""

    @property
    def keeps_graph(self) -> bool:
        """Whether this process keeps the entity graph and the templates in force (the
        inspector role, or an api process that mirrors every fault)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> dict[str, Any]:
        """What `/health` shows beside the status: partitions, probing, counts."""

    # --- resources and events ------------------------------------------------------------

    def hosts(self) -> Mapping[str, Host]:
        """Compute hosts by name, as last known."""

    def servers(self) -> Mapping[str, Server]:
        """Servers by id, as last known."""

    def servers_on(self, host: str) -> Collection[Server]: ...

    async def submit(self, events: list[Event]) -> None:
        """Accept events: durable when this returns, and already being handled."""

    async def recent_events(self, limit: int, marker: str | None = None) -> list[dict[str, Any]]:
        """Newest first; after `marker`, the page that follows it (`LookupError` if the
        marker names no event). The other lists page alike."""

    # --- faults and their notifications --------------------------------------------------

    async def faults(
        self, status: str | None, limit: int, marker: str | None = None
    ) -> list[Fault]:
        """Faults, newest first, each with its whole timeline."""

    async def fault(self, fault_id: str) -> Fault | None: ...

    async def notifications(
        self,
        fault_id: str | None = None,
        status: str | None = None,
        limit: int = 1000,
        marker: str | None = None,
    ) -> list[OutboxEntry]:
        """Oldest first."""

    @property
    def alarms(self) -> AlarmService:
        """The Aodh-compatible alarms."""

    # --- what changes, as it happens -----------------------------------------------------

    @property
    def live(self) -> Hub:
        """Live events: faults, the graph, maintenance sessions, workflow executions
        (`GET /v1/stream`)."""

    # --- the entity graph (kept by the inspector role) -----------------------------------

    @property
    def graph(self) -> RxGraph:
        """The entity graph, to read; change it only through the commands below."""

    def alarm_keys(self) -> set[str]:
        """Keys of the alarms in the graph: faults' and those the templates deduce."""

    def alarm_history(self, limit: int) -> list[dict[str, Any]]: ...

    def owned_by_vim(self, key: str) -> bool:
        """Whether the vertex comes and goes with the VIM (hosts, servers)."""

    async def add_topology(self, body: TopologyIn) -> Loaded:
        """Add entities and relations, for good and in every inspector; the rules act on
        the change at once."""

    async def remove_vertex(self, key: str) -> None: ...

    # --- rule templates (kept by the inspector role) -------------------------------------

    def templates(self) -> Mapping[str, Installed]:
        """The templates in force, by name."""

    def template_matches(self) -> Counter[str]:
        """How many matches each template holds in the graph now."""

    async def validate_template(self, text: str) -> Template: ...

    async def put_template(self, text: str) -> tuple[Installed, bool, Plan]: ...

    async def delete_template(self, name: str) -> Installed | None: ...

    # --- instance HA (Masakari): failover segments and notifications ---------------------

    @property
    def segments(self) -> SegmentStore:
        """The failover segments and their hosts."""

    @property
    def ha_notifications(self) -> NotificationIntake:
        """Masakari notifications: taken in, and read with their statuses up to date."""

    @property
    def fence_devices(self) -> FenceDeviceStore | None:
        """Fence devices registered through the API (passwords sealed)."""

    @property
    def haas(self) -> HaasStore:
        """HA clusters: their nodes, services, resources, fencing devices, policies and
        history."""

    @property
    def hostlink(self) -> HostLink | None:
        """The hosts' link for server-group messaging (None where it is off or not served
        by this process)."""

    @property
    def workflows(self) -> Workflows | None:
        """Workflow definitions and executions (None where no engine runs: the api and
        inspector roles run one)."""

    @property
    def maintenance(self) -> Maintenance | None:
        """Planned-maintenance sessions and the owners' constraints (None where it is off
        or does not run in this process)."""

    # --- the audit trail -------------------------------------------------------------------

    async def record_audit(self, entry: AuditEntry) -> None:
        """Keep one entry of the trail (the API calls this after each change request)."""

    async def audit_log(self, query: AuditQuery) -> list[AuditEntry]:
        """Entries, newest first."""
