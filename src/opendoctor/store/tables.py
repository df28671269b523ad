"""SQLAlchemy table definitions. The schema itself is owned by the Alembic migrations."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The alarm history's rows other than state transitions (creations, rule changes,
# deletions), as SQL: the predicate of their partial index, and of the query it serves
# (a literal, not a bound value, so that the planner can match the two).
NOT_STATE_TRANSITION = "type <> 'state transition'"


class Base(DeclarativeBase):
    pass


class EventRow(Base):
    """An accepted southbound event. `processed` turns true once its effects are persisted."""

    __tablename__ = "events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(64))
    time: Mapped[float] = mapped_column(Float)
    received: Mapped[float] = mapped_column(Float)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    processed: Mapped[bool] = mapped_column(Boolean, default=False)
    fault_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    __table_args__ = (Index("ix_events_processed", "processed"),)


class FaultRow(Base):
    """One fault (one (type, hostname) from first report to clearance) and its timeline."""

    __tablename__ = "faults"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))  # active | cleared
    started: Mapped[float] = mapped_column(Float)
    cleared: Mapped[float | None] = mapped_column(Float, nullable=True)
    trace: Mapped[dict[str, Any]] = mapped_column(JSON)
    affected: Mapped[list[str]] = mapped_column(JSON)
    recovery: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    instance_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    signals: Mapped[list[str]] = mapped_column(JSON, default=list)
    flaps: Mapped[int] = mapped_column(Integer, default=0)
    held_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_faults_status", "status"),)


class ResourceRow(Base):
    """Last known state of a host or server, as the inspector sees it."""

    __tablename__ = "resources"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # host | server
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated: Mapped[float] = mapped_column(Float)


class AlarmRow(Base):
    """An Aodh-style alarm (a consumer's subscription)."""

    __tablename__ = "alarms"
    alarm_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str] = mapped_column(String(50))
    project_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(32))
    state_reason: Mapped[str] = mapped_column(Text, default="")
    state_timestamp: Mapped[float] = mapped_column(Float)
    timestamp: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(32))
    repeat_actions: Mapped[bool] = mapped_column(Boolean, default=False)
    alarm_actions: Mapped[list[str]] = mapped_column(JSON)
    ok_actions: Mapped[list[str]] = mapped_column(JSON)
    insufficient_data_actions: Mapped[list[str]] = mapped_column(JSON)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    __table_args__ = (Index("ix_alarms_project", "project_id"),)


class AlarmHistoryRow(Base):
    __tablename__ = "alarm_history"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    alarm_id: Mapped[str] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[float] = mapped_column(Float)
    project_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(32))
    on_behalf_of: Mapped[str] = mapped_column(String(255))
    # The `AlarmStore` (one per process) that wrote the row: its own sync skips it.
    writer: Mapped[str | None] = mapped_column(String(36), nullable=True)
    __table_args__ = (
        Index("ix_alarm_history_alarm", "alarm_id", "timestamp"),
        # The few rows a notifier takes up before every fault, apart from the many state
        # transitions (`AlarmStore.changes_since` without states): a partial index, which
        # the notification path's transition inserts do not grow.
        Index(
            "ix_alarm_history_definitions",
            "timestamp",
            postgresql_where=text(NOT_STATE_TRANSITION),
            sqlite_where=text(NOT_STATE_TRANSITION),
        ),
    )


class OutboxRow(Base):
    """One notification to deliver (or delivered) to one action URL."""

    __tablename__ = "outbox"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    alarm_id: Mapped[str] = mapped_column(String(36))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt: Mapped[float] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[float] = mapped_column(Float)
    delivered: Mapped[float | None] = mapped_column(Float, nullable=True)
    fault_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    __table_args__ = (
        Index("ix_outbox_status", "status", "next_attempt"),
        Index("ix_outbox_fault", "fault_id"),
    )


class TemplateRow(Base):
    """A rule template added through the API (built-in ones ship with the package)."""

    __tablename__ = "templates"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)


class LeaseRow(Base):
    """Who leads a singleton role (the monitor of a partition, say) and until when, in
    the database's own clock so that replicas' clocks need not agree."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires: Mapped[float] = mapped_column(Float)


class AuditRow(Base):
    """One request to change something through the API, and its answer."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(2048))
    route: Mapped[str] = mapped_column(String(512))
    status: Mapped[int] = mapped_column(Integer)
    project_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    roles: Mapped[list[str]] = mapped_column(JSON)
    target: Mapped[str | None] = mapped_column(String(512), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    peer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    __table_args__ = (
        Index("ix_audit_at", "at"),
        Index("ix_audit_project", "project_id", "id"),
    )


class TopologyChangeRow(Base):
    """A change to the entity graph made through the API (`POST|DELETE /v1/topology`),
    in order: every inspector applies them all, and again after a restart."""

    __tablename__ = "topology_changes"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    op: Mapped[str] = mapped_column(String(16))  # add | remove
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class SegmentRow(Base):
    """A failover segment (Masakari's): hosts that recover into each other, and how."""

    __tablename__ = "segments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    recovery_method: Mapped[str] = mapped_column(String(32))
    service_type: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    all_servers: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (UniqueConstraint("name", name="uq_segments_name"),)


class SegmentHostRow(Base):
    """A host of a segment. `service_type` is its segment's, kept here so that the
    database itself holds a host name to one segment per service type."""

    __tablename__ = "segment_hosts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    segment_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(255))
    service_type: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(255))
    control_attributes: Mapped[str] = mapped_column(Text)
    reserved: Mapped[bool] = mapped_column(Boolean, default=False)
    on_maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (
        UniqueConstraint("name", "service_type", name="uq_segment_hosts_name"),
        Index("ix_segment_hosts_segment", "segment_id"),
    )


class HaNotificationRow(Base):
    """A Masakari notification and what became of it (`core.segments.HaNotification`)."""

    __tablename__ = "ha_notifications"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    hostname: Mapped[str] = mapped_column(String(255))
    generated_time: Mapped[float] = mapped_column(Float)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    source_host_uuid: Mapped[str] = mapped_column(String(36))
    failover_segment_uuid: Mapped[str] = mapped_column(String(36))
    event_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (
        # The duplicate check: same host and type, generated recently.
        Index("ix_ha_notifications_host", "hostname", "type", "generated_time"),
        Index("ix_ha_notifications_status", "status"),
    )


class FenceDeviceRow(Base):
    """A host's fence device registered through the API; the password sealed
    (`infra.secretbox`), never stored in the clear."""

    __tablename__ = "fence_devices"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    driver: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(2048))
    system: Mapped[str | None] = mapped_column(String(255), nullable=True)
    username: Mapped[str] = mapped_column(String(255))
    password_sealed: Mapped[str] = mapped_column(Text)
    verify_tls: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class WorkflowDefinitionRow(Base):
    """A workflow definition (`core.workflows.WorkflowDefinition`). `builtin` is part of
    the unique key: an operator's own workflow of a shipped name sits beside the shipped
    one (and shadows it), even in a project whose id is empty like the shipped ones'."""

    __tablename__ = "workflow_definitions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    namespace: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(String(16))
    tags: Mapped[list[str]] = mapped_column(JSON)
    input: Mapped[str] = mapped_column(Text)
    definition: Mapped[str] = mapped_column(Text)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (
        UniqueConstraint(
            "name", "namespace", "project_id", "builtin", name="uq_workflow_definitions_name"
        ),
        Index("ix_workflow_definitions_created", "created_at"),
    )


class WorkflowExecutionRow(Base):
    """One run of a workflow (`core.workflows.Execution`)."""

    __tablename__ = "workflow_executions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workflow_name: Mapped[str] = mapped_column(String(255))
    workflow_id: Mapped[str] = mapped_column(String(36))
    workflow_namespace: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    spec: Mapped[str] = mapped_column(Text)
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32))
    state_info: Mapped[str | None] = mapped_column(Text, nullable=True)
    output: Mapped[dict[str, Any]] = mapped_column(JSON)
    context: Mapped[dict[str, Any]] = mapped_column(JSON)
    privileged: Mapped[bool] = mapped_column(Boolean, default=False)
    task_execution_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    root_execution_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (
        # What engines look for at start and when one's lease ends: unfinished, by owner.
        Index("ix_workflow_executions_state", "state", "owner"),
        Index("ix_workflow_executions_parent", "task_execution_id"),
    )


class TaskExecutionRow(Base):
    """One task of a run (`core.workflows.TaskExecution`). `result` may be any JSON value;
    a None read back is JSON null (Python has one value for both)."""

    __tablename__ = "task_executions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    execution_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(255))
    workflow_name: Mapped[str] = mapped_column(String(255))
    workflow_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(32))
    state_info: Mapped[str | None] = mapped_column(Text, nullable=True)
    in_context: Mapped[dict[str, Any]] = mapped_column(JSON)
    published: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    runtime_context: Mapped[dict[str, Any]] = mapped_column(JSON)
    processed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_task_executions_execution", "execution_id"),)


class ActionExecutionRow(Base):
    """One call of an action (`core.workflows.ActionExecution`)."""

    __tablename__ = "action_executions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    task_execution_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    execution_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    project_id: Mapped[str] = mapped_column(String(255))
    task_name: Mapped[str] = mapped_column(String(255))
    workflow_name: Mapped[str] = mapped_column(String(255))
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(32))
    state_info: Mapped[str | None] = mapped_column(Text, nullable=True)
    accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    index: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (
        Index("ix_action_executions_task", "task_execution_id"),
        # A resumed run reads its actions by execution.
        Index("ix_action_executions_execution", "execution_id"),
    )


class WorkflowRequestRow(Base):
    """A state an execution was asked to take (pause, resume, cancel) through a process
    that does not run it: its engine reads it and acts. A table of its own, not a column
    of the execution, which its engine rewrites whole with every step."""

    __tablename__ = "workflow_requests"
    execution_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    info: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class MaintenanceSessionRow(Base):
    """A planned-maintenance session (`core.maintenance.Session`), one JSON document that
    its engine rewrites whole after every step. `state` and `created` are copied out of
    it for what lists sessions: running ones at start, the newest for the API."""

    __tablename__ = "maintenance_sessions"
    session_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)
    doc: Mapped[str] = mapped_column(Text)
    __table_args__ = (
        Index("ix_maintenance_sessions_state", "state"),
        Index("ix_maintenance_sessions_created", "created"),
    )


class MaintenanceInstanceGroupRow(Base):
    """An owner's constraints on an instance group (`core.maintenance`
    `InstanceGroupConstraints`), as a JSON document."""

    __tablename__ = "maintenance_instance_groups"
    group_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255))
    updated: Mapped[float] = mapped_column(Float)
    doc: Mapped[str] = mapped_column(Text)
    __table_args__ = (Index("ix_maintenance_instance_groups_project", "project_id"),)


class MaintenanceInstanceRow(Base):
    """An owner's constraints on one instance (`core.maintenance.InstanceConstraints`),
    as a JSON document."""

    __tablename__ = "maintenance_instances"
    instance_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255))
    group_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    updated: Mapped[float] = mapped_column(Float)
    doc: Mapped[str] = mapped_column(Text)
    __table_args__ = (
        Index("ix_maintenance_instances_project", "project_id"),
        Index("ix_maintenance_instances_group", "group_id"),
    )


class HaClusterRow(Base):
    """An HA-as-a-service cluster (`core.haas.Cluster`)."""

    __tablename__ = "ha_clusters"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    level: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16))
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_ha_clusters_project", "project_id"),)


class HaNodeRow(Base):
    """A node of a cluster (`core.haas.Node`); found by `ref` when its resource fails."""

    __tablename__ = "ha_nodes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    created: Mapped[float] = mapped_column(Float)
    __table_args__ = (
        Index("ix_ha_nodes_cluster", "cluster_id"),
        Index("ix_ha_nodes_ref", "kind", "ref"),
        UniqueConstraint("cluster_id", "kind", "ref", name="uq_ha_nodes_member"),
    )


class HaPartRow(Base):
    """A resource, service, fencing device or policy of a cluster (`kind`), as a JSON
    document: read whole with its cluster, never queried inside."""

    __tablename__ = "ha_parts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    created: Mapped[float] = mapped_column(Float)
    doc: Mapped[dict[str, Any]] = mapped_column(JSON)
    __table_args__ = (Index("ix_ha_parts_cluster", "cluster_id", "kind"),)


class HaHistoryRow(Base):
    """One step taken for a cluster (`core.haas.HistoryEntry`)."""

    __tablename__ = "ha_history"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[float] = mapped_column(Float)
    node_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    what: Mapped[str] = mapped_column(Text)
    operation: Mapped[str | None] = mapped_column(String(32), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)
    __table_args__ = (Index("ix_ha_history_cluster", "cluster_id", "at"),)
