"""The embedded service: every block wired together in one process.

`Service` is the wiring: it builds the blocks a process runs (its roles), starts them in
dependency order and stops them in reverse. The demo, the benchmarks and the tests
drive it; the API sees it only through `facade` (`api.facade.Facade`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from opendoctor.app.facade import ServiceFacade
from opendoctor.app.guestlink import GuestLinkPart
from opendoctor.app.haas import HaasPart
from opendoctor.app.intake import EVENTS_TOPIC, Intake
from opendoctor.app.maintenance import MaintenancePart
from opendoctor.app.monitor_queue import queue_consumers
from opendoctor.app.topology_sync import TopologySync
from opendoctor.app.workflows import WorkflowPart
from opendoctor.bus.factory import make_bus
from opendoctor.controller.factory import make_vim
from opendoctor.core.model import Event, new_id
from opendoctor.core.notifications import OutboxEntry
from opendoctor.core.ports import Bus, GuestLink, NotifyTarget, Sender, VimDriver
from opendoctor.core.settings import Role, Settings
from opendoctor.infra.http1 import Http1Client
from opendoctor.infra.httpclient import HttpClient
from opendoctor.infra.live import Hub
from opendoctor.infra.secretbox import SecretBox
from opendoctor.infra.tasks import every
from opendoctor.inspector.effects import Outcome
from opendoctor.inspector.fault_graph import FaultGraph
from opendoctor.inspector.graph import RxGraph
from opendoctor.inspector.graph.feed import GraphFeed
from opendoctor.inspector.graph.history import AlarmHistory
from opendoctor.inspector.graph.live import GraphEvents
from opendoctor.inspector.inspector import Inspector, Recover, RecoverServer
from opendoctor.inspector.mirror import FaultMirror
from opendoctor.inspector.templates import Engine, Plan
from opendoctor.inspector.templates.registry import Installed, Registry
from opendoctor.inspector.topology import Topology
from opendoctor.monitor.masakari_intake import NotificationIntake
from opendoctor.monitor.probing import Probing, open_reports
from opendoctor.notifier import remote
from opendoctor.notifier.alarms import AlarmService
from opendoctor.notifier.delivery import Dispatcher, HttpSender, LogSender
from opendoctor.notifier.index import AlarmIndex
from opendoctor.notifier.notifier import Notifier
from opendoctor.notifier.signer import ProjectSigner
from opendoctor.recovery.evacuation import Recovery
from opendoctor.recovery.fencing import Fencing
from opendoctor.recovery.guard import FenceGuard
from opendoctor.recovery.vm import VmRecovery
from opendoctor.store.alarms import AlarmStore
from opendoctor.store.audit import AuditStore
from opendoctor.store.db import Database
from opendoctor.store.fence_devices import FenceDeviceStore
from opendoctor.store.ha_notifications import HaNotificationStore
from opendoctor.store.haas import HaasStore
from opendoctor.store.leases import LeasePresence, LeaseStore
from opendoctor.store.outbox import OutboxStore
from opendoctor.store.pipeline import EventStore, FaultStore, ResourceStore
from opendoctor.store.segments import SegmentStore
from opendoctor.store.templates import TemplateStore
from opendoctor.store.topology import TopologyChangeStore

if TYPE_CHECKING:
    from opendoctor.notifier.amqp_sender import AmqpSender

log = logging.getLogger(__name__)


class Service:
    """The blocks of `settings.roles`: all of them embedded, or some, as one process of a
    scaled-out deployment whose other processes run the rest (over the amqp bus)."""

    def __init__(self, settings: Settings, vim: VimDriver | None = None) -> None:
        self.settings = settings
        self.roles: frozenset[Role] = frozenset(settings.roles)
        self._vim = vim
        self.db = Database(settings.db_url)
        self.bus: Bus = make_bus(settings, LeasePresence(LeaseStore(self.db)))
        self.http = HttpClient(
            timeout=settings.notifier.timeout, connections=settings.notifier.connections
        )
        self.topology = Topology()
        # What changes, as it happens, for whoever follows `GET /v1/stream` (the dashboard).
        self.live = Hub()
        # The entity graph (for the correlation engine and /v1/topology): fed beside the
        # topology, from the VIM's snapshot and change feed.
        self.graph = RxGraph()
        self.graph.observers.add(GraphEvents(self.graph, self.live))
        self.graph_feed = GraphFeed(self.graph)
        self.alarm_history = AlarmHistory()
        self.fault_graph = FaultGraph(self.graph, self.alarm_history)
        # The rule templates decide what a fault means (who is hurt, what to mark down).
        self.engine = Engine(self.graph, self.alarm_history)
        self.templates = Registry(
            self.engine, TemplateStore(self.db), settings.inspector.template_check_seconds
        )
        self.events = EventStore(self.db)
        self.intake = Intake(self.events, self.bus)
        self.faults = FaultStore(self.db)
        self.resources = ResourceStore(self.db)
        self.outbox = OutboxStore(self.db)
        self.audit = AuditStore(self.db)
        # Failover segments (edited through the Masakari API, read by recovery).
        self.segments = SegmentStore(self.db)
        # Fence devices registered through the API, their passwords sealed by a key that
        # is not in the database.
        key_file = settings.recovery.fencing.key_file or settings.state_dir / "fence-devices.key"
        self.fence_devices = FenceDeviceStore(self.db, SecretBox.from_file(key_file))
        self.index = AlarmIndex(settings.notifier.infrastructure_projects)
        egress = settings.notifier.egress()
        self.alarms = AlarmService(
            AlarmStore(self.db), self.index, egress, settings.notifier.max_alarms_per_project
        )
        # Workflows' HTTP tasks go to URLs tenants gave: a client of their own, held to
        # the egress policy, apart from the one recovery and the VIM use.
        self.workflow_http = HttpClient(
            timeout=settings.notifier.timeout,
            connections=settings.notifier.connections,
            egress=egress,
            max_response_bytes=settings.notifier.max_response_bytes,
        )
        # The callbacks themselves, the hot path's requests, over a leaner client of their
        # own with the same policy (a third of aiohttp's CPU per request).
        self.callback_http = Http1Client(
            timeout=settings.notifier.timeout,
            connections=settings.notifier.connections,
            egress=egress,
            max_response_bytes=settings.notifier.max_response_bytes,
            resend_unanswered=True,  # consumers drop repeats by x-openstack-request-id
        )
        signer = ProjectSigner(self._project_of, settings.notifier.signing())
        http_sender = HttpSender(self.callback_http, settings.notifier.timeout, signer)
        senders: dict[str, Sender] = {
            "http": http_sender,
            "https": http_sender,
            "log": LogSender(),
        }
        self.amqp_sender: AmqpSender | None = None
        try:
            from opendoctor.notifier.amqp_sender import AmqpSender
        except ImportError:  # installed without the amqp extra: the API refuses amqp:// actions
            pass
        else:
            self.amqp_sender = AmqpSender(settings.notifier.timeout, egress=egress, signer=signer)
            senders["amqp"] = senders["amqps"] = self.amqp_sender
        self.dispatcher = Dispatcher(
            self.outbox, senders, settings.notifier, project_of=self._project_of
        )
        shared = settings.bus.kind != "memory"
        self.notifier = Notifier(
            self.index,
            self.alarms,
            self.outbox,
            self.dispatcher,
            shared,
            first_attempt_wait=settings.notifier.first_attempt_wait,
        )
        # The inspector tells owners through the notifier beside it, or over the bus.
        self.notify_target: NotifyTarget = (
            self.notifier if "notifier" in self.roles else remote.BusNotifications(self.bus)
        )
        self.workflow_part = WorkflowPart(
            settings, self.db, self.workflow_http, lambda: self.vim, self.notify_target, self.live
        )
        self.maintenance_part = MaintenancePart(
            settings,
            self.db,
            lambda: self.vim,
            self.topology,
            self.graph_feed,
            self.notify_target,
            self.fence_devices,
            self._faulted_hosts,
            lambda: self.workflow_part.workflows,
            publish=self.live.publish,
        )
        self.probing = Probing(settings, self.submit_one, lambda: open_reports(self.faults))
        self.topology_sync = TopologySync(
            settings.inspector,
            lambda: self.vim,
            self.topology,
            self.graph,
            self.graph_feed,
            self.resources,
            self.react,
            TopologyChangeStore(self.db),
            writer="inspector" in self.roles,
            probing=self.probing if "monitor" in self.roles else None,
            shared=settings.bus.kind != "memory",
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._reactions: set[asyncio.Task[Outcome]] = set()
        self._inspector: Inspector | None = None
        # Scaled out: the other partitions' faults, mirrored into this process's graph.
        self.mirror: FaultMirror | None = None
        self.fencing: Fencing | None = None  # with recovery enabled
        self.started = False
        # Server-group messaging through the hosts (the api role serves them; scaled out,
        # an inspector tells the api processes of host faults and fences): None where off.
        self.guestlink_part: GuestLinkPart | None = None
        relayed = settings.bus.kind != "memory"
        wanted = self.runs("api") or (relayed and self.runs("inspector"))
        if settings.guestlink.enabled and wanted:
            self.guestlink_part = GuestLinkPart(
                settings.guestlink,
                lambda: self.vim,
                self.topology,
                self.live,
                bus=settings.bus if relayed else None,
            )
        self.guestlink: GuestLink | None = (
            None if self.guestlink_part is None else self.guestlink_part.link
        )
        # HA clusters, their policies and history (docs/haas.md).
        self.haas = HaasStore(self.db)
        self.facade = ServiceFacade(self)
        # Masakari notifications: a fault one reports goes in as any event does (`submit`).
        self.ha_notifications = NotificationIntake(
            self.segments,
            HaNotificationStore(self.db),
            self.submit,
            lambda: self.vim,
            self.facade.fault,
            lambda: self.topology.servers,
            settings.masakari,
        )

    @property
    def vim(self) -> VimDriver:
        if self._vim is None:
            self._vim = make_vim(self.settings)
        return self._vim

    @property
    def inspector(self) -> Inspector:
        assert self._inspector is not None, "service not started"
        return self._inspector

    def consuming(self) -> dict[str, dict[str, list[int]]]:
        """The bus partitions this process subscribes to, per topic (scaled out): its own,
        those it stands by for, and of those the ones it serves."""
        own: dict[str, set[int]] = getattr(self.bus, "consuming", {})
        standby: dict[str, set[int]] = getattr(self.bus, "standing_by", {})
        taken: dict[str, set[int]] = getattr(self.bus, "taken_over", {})
        return {
            topic: {
                "own": sorted(own.get(topic, ())),
                "standby": sorted(standby.get(topic, ())),
                # Stood-by partitions whose messages come here (their replica is gone).
                "taken_over": sorted(taken.get(topic, ())),
            }
            for topic in sorted(own.keys() | standby.keys())
        }

    def _faulted_hosts(self) -> set[str]:
        if self._inspector is None:
            return set()
        return {f.hostname for f in self._inspector.active.values() if f.instance_id is None}

    def _project_of(self, entry: OutboxEntry) -> str:
        alarm = self.index.get(entry.alarm_id)
        return alarm.project_id if alarm is not None else ""

    def runs(self, *roles: Role) -> bool:
        """Whether this process runs any of these roles."""
        return not self.roles.isdisjoint(roles)

    async def start(self) -> None:
        if self.settings.bus.kind == "amqp":
            # Fail fast, naming the broker and the reason.
            from opendoctor.bus.amqp import AmqpBus

            assert isinstance(self.bus, AmqpBus)
            await self.bus.connect()
        await self.db.migrate()
        await self.intake.start()
        if self.runs("api", "notifier"):
            await self.alarms.load()
        if self.runs("inspector"):
            await self.maintenance_part.restore_marks()
            await self._start_inspector()
        elif self.runs("api", "monitor"):
            # What the API checks events against and shows, what the monitor probes.
            await self.topology_sync.load()
            if self.runs("api") and self.settings.bus.kind != "memory":
                await self._start_view()
        if self.settings.bus.kind != "memory" and self.runs("api", "notifier"):
            # Other processes on the same database create and fire alarms too.
            self._every(self.settings.notifier.sync_interval, self._sync_alarms, "alarm sync")
        if self.runs("notifier"):
            if not self.runs("inspector"):
                self.bus.subscribe(remote.NOTIFICATIONS_TOPIC, remote.handler(self.notifier))
            self.dispatcher.start()
        if self.runs("api", "inspector", "monitor"):
            self.topology_sync.follow()
        if self.runs("monitor") and self.settings.monitor.enabled:
            for host in self.topology.hosts.values():
                self.probing.watch(host)
            lease = self.settings.monitor.lease
            await self.probing.start(LeaseStore(self.db) if lease is not None else None)
        if self.runs("api", "inspector"):
            await self.workflow_part.start()
        if self.runs("inspector"):
            # Sessions run beside the inspector, whose marks (a host in maintenance going
            # down is no fault) they set; an api process only records what it is told.
            await self.maintenance_part.start()
        if self.runs("api"):
            self._every(3600, self._prune_audit, "audit prune", first=True)
            await self.intake.replay()
            self._tasks += queue_consumers(self)  # Doctor events from RabbitMQ (monitors.queue)
        if self.guestlink_part is not None:
            await self.guestlink_part.start()
        self.started = True
        log.info("service started", extra={"roles": sorted(self.roles)})

    async def _start_inspector(self) -> None:
        recovery: Recover | None = None
        vm_recovery: RecoverServer | None = None
        if self.settings.recovery.enabled and self.settings.recovery.vm.enabled:
            vm_recovery = VmRecovery(
                self.vim,
                self.http,
                self.settings.recovery.vm,
                self.notify_target,
                # Not `hosts.get`: a reload of the topology replaces the dict.
                host_of=lambda name: self.topology.hosts.get(name),
                on_moved=self.topology.put_server,
            )
        if self.settings.recovery.enabled:
            fencing = self.settings.recovery.fencing
            self.fencing = Fencing(fencing, registered=self.fence_devices.device)
            if self.guestlink_part is not None:
                self.guestlink_part.watch_fencing(self.fencing)
            recovery = Recovery(
                self.vim,
                self.http,
                self.settings.recovery,
                FenceGuard(fencing, self.fencing, self.notify_target),
                on_moved=self.topology.put_server,
                segments=self.segments,
                running=self.topology.servers_on,
            )
        runner = self.workflow_part.build(self.fencing)
        recovery, vm_recovery = self.workflow_part.recovery(recovery, vm_recovery)
        # HA as a service: failures of cluster nodes go to its engine (docs/haas.md).
        self.haas_part = HaasPart(
            self.settings,
            self.haas,
            self.vim,
            self.http,
            self.notify_target,
            self.fencing,
            lambda: self.guestlink,
            self.topology.put_server,
        )
        recovery, vm_recovery = self.haas_part.wrap(recovery, vm_recovery)
        self._inspector = Inspector(
            self.topology,
            self.vim,
            self.notify_target,
            self.events,
            self.faults,
            self.settings.inspector,
            self.engine,
            self.fault_graph,
            recover=recovery,
            dedupe=self.settings.bus.kind != "memory",
            recover_server=vm_recovery,
            workflows=runner,
            live=self.live,
        )
        await self._inspector.restore()
        await self.topology_sync.load()
        inspector = self.settings.inspector
        await self.templates.load(inspector.default_templates, inspector.templates_dir)
        # Faults that outlived a restart go back into the graph as alarms. What the rules
        # deduce from them was carried out before the restart: only the graph is rebuilt.
        self._inspector.raise_restored()
        if self.settings.bus.consume is not None:
            # One of several inspectors: the others' faults go into this graph too.
            active = self._inspector
            self.mirror = FaultMirror(
                self.faults,
                self.fault_graph,
                self.engine,
                lambda: active.active,
                active.cleared_here,
                active.forget,
            )
            self.engine.acts = self.fault_graph.acts
            await self.mirror.sync()
            self._every(inspector.fault_sync_interval, self._sync_faults, "fault sync")
        plan = self.engine.attach()
        log.info(
            "rule templates in force",
            extra={
                "templates": len(self.engine.templates),
                "deduced_alarms": len(self.engine.alarms),
                "restored_faults": len(self._inspector.active),
                "not_redone": len(plan.notify) + len(plan.mark_down),
            },
        )
        if self.settings.bus.kind != "memory":
            self._every(inspector.template_sync_interval, self._sync_templates, "template sync")
        self.bus.subscribe_many(EVENTS_TOPIC, self._inspector.handle_many)

    async def _start_view(self) -> None:
        """An api process of a split deployment: the graph as the inspectors see it (every
        fault mirrored, the same templates), to show and to query; it acts on nothing."""
        inspector = self.settings.inspector
        await self.templates.load(inspector.default_templates, inspector.templates_dir)
        self.mirror = FaultMirror(self.faults, self.fault_graph, self.engine)
        await self.mirror.sync()
        self.engine.attach()
        self._every(inspector.fault_sync_interval, self._sync_faults, "fault sync")
        self._every(inspector.template_sync_interval, self._sync_templates, "template sync")

    def _every(
        self, interval: float, work: Callable[[], Awaitable[None]], what: str, first: bool = False
    ) -> None:
        self._tasks.append(asyncio.create_task(every(interval, work, what, first=first), name=what))

    async def _prune_audit(self) -> None:
        keep = self.settings.api.audit_retention_days * 86_400
        gone = await self.audit.prune(time.time() - keep)
        if gone:
            log.info("old audit entries dropped", extra={"entries": gone})

    async def _sync_alarms(self) -> None:
        await self.alarms.sync_since(time.time())

    async def _sync_templates(self) -> None:
        if await self.templates.stale():
            async with self._releasing():
                self.carry_out(await self.templates.sync())

    async def _sync_faults(self) -> None:
        assert self.mirror is not None
        self.carry_out(await self.mirror.sync())

    @contextlib.asynccontextmanager
    async def _releasing(self) -> AsyncIterator[None]:
        """Around a change of the templates in force: afterwards, bring back up what was
        marked down only for reasons the change took away."""
        before = self.engine.marked()
        yield
        if self._inspector is not None:  # an api process's view marks nothing
            await self._inspector.release(before)

    def react(self) -> None:
        """Bring the rules up to date after a change that is not a fault (the VIM's feed,
        the API), and carry out what follows in the background."""
        if self.engine.attached:
            self.carry_out(self.engine.run(keep_deferred=True))

    async def put_template(self, text: str) -> tuple[Installed, bool, Plan]:
        """Add or replace an API template, carry out what it decides, and bring back up
        what only the version it replaced wanted down."""
        async with self._releasing():
            item, created, plan = await self.templates.put(text)
            self.carry_out(plan)
        return item, created, plan

    async def delete_template(self, name: str) -> Installed | None:
        """Delete an API template; what it alone marked down comes back up."""
        async with self._releasing():
            deleted = await self.templates.delete(name)
            if deleted is not None:
                self.carry_out(deleted[1])
        return None if deleted is None else deleted[0]

    def carry_out(self, plan: Plan) -> None:
        """Carry out, in the background, a plan that no fault owns (a template added, a
        server placed on a failed host)."""
        if not plan or self._inspector is None:
            return
        task = asyncio.create_task(self._inspector.effects.carry_out(plan, None, new_id()))
        self._reactions.add(task)
        task.add_done_callback(self._reactions.discard)

    async def submit(self, events: list[Event]) -> None:
        """Accept events: durable when this returns, and handed to the bus (app/intake.py);
        from this service's loop or the front loop's (app/front.py)."""
        await self.intake.submit(events)

    async def submit_one(self, event: Event) -> None:
        await self.submit([event])

    async def stop(self) -> None:
        self.live.close()  # the streams end: nothing more will change
        if self.guestlink_part is not None:
            await self.guestlink_part.stop()
        await self.maintenance_part.stop()
        await self.workflow_part.stop()
        await self.probing.stop()
        await self.topology_sync.stop()
        tasks: list[asyncio.Task[Any]] = [*self._tasks, *self._reactions]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.bus.close()
        if self._inspector is not None:
            await self._inspector.close()
        await self.notifier.close()
        await self.dispatcher.stop()
        if self.amqp_sender is not None:
            await self.amqp_sender.close()
        await self.http.close()
        await self.workflow_http.close()
        await self.callback_http.close()
        if self._vim is not None:
            await self._vim.close()
        if self.fencing is not None:
            await self.fencing.close()
        self.templates.close()
        await self.intake.stop()
        await self.events.close()
        await self.faults.close()
        await self.db.close()
        self.started = False
