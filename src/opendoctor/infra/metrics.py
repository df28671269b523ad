"""Prometheus metrics: one place that names them all."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

# From sub-millisecond in-process stages to multi-second recoveries.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

STAGE = Histogram(
    "opendoctor_stage_seconds",
    "Time from fault detection (T01) to each pipeline checkpoint",
    ["checkpoint"],
    buckets=_BUCKETS,
)
EVENTS = Counter("opendoctor_events_total", "Southbound events by outcome", ["type", "outcome"])
# EVENTS' counter for (type, outcome), looked up once: a storm's intake counts tens of
# thousands of events, and a label lookup costs more than counting.
event_outcome = functools.cache(EVENTS.labels)
NOTIFICATIONS = Counter(
    "opendoctor_notification_attempts_total", "Notification attempts by result", ["result"]
)
NOTIFICATIONS_LATE = Counter(
    "opendoctor_notifications_late_total",
    "First attempts that outlasted notifier.first_attempt_wait (the fault went on without them)",
)
FAULTS_ACTIVE = Gauge("opendoctor_faults_active", "Faults currently active")
FLAPS = Counter(
    "opendoctor_fault_flaps_total", "Resources down again while their fault was held down"
)
BUS_HAND_BACKS = Counter(
    "opendoctor_bus_hand_backs_total",
    "Bus partitions a replica stopped consuming because their own replica was back",
    ["topic"],
)
VIM_ERRORS = Counter("opendoctor_vim_errors_total", "Failed VIM calls", ["operation"])
RECOVERIES = Counter("opendoctor_recoveries_total", "Server recoveries by result", ["result"])
FENCES = Counter("opendoctor_fences_total", "Hosts fenced through their BMC, by result", ["result"])
FENCING_BLOCKED = Gauge(
    "opendoctor_fencing_blocked",
    "Failed hosts whose fence failed (or who have no fence device where one is required): "
    "their servers wait, not evacuated",
)
HOST_PROBES_MISSED = Counter(
    "opendoctor_host_probes_missed_total", "Heartbeat probes hosts did not answer"
)
HOST_ALT_PATH_LOST = Counter(
    "opendoctor_host_alt_path_lost_total",
    "Times a host's alt address went silent while its address answered",
)
MAINTENANCE_RUNNING = Gauge(
    "opendoctor_maintenance_sessions_running", "Maintenance sessions this process runs"
)
MAINTENANCE_SESSIONS = Counter(
    "opendoctor_maintenance_sessions_total", "Maintenance sessions ended, by end state", ["state"]
)
MAINTENANCE_MOVES = Counter(
    "opendoctor_maintenance_moves_total",
    "Instances moved off hosts in maintenance, by action and result",
    ["action", "result"],
)
MAINTENANCE_HOSTS = Counter(
    "opendoctor_maintenance_hosts_total", "Hosts maintained, by result", ["result"]
)
WORKFLOWS_REQUESTED = Counter(
    "opendoctor_workflows_requested_total", "run_workflow actions fired by templates", ["workflow"]
)
WORKFLOW_EXECUTIONS = Counter(
    "opendoctor_workflow_executions_total",
    "Workflow executions that ended here, by their end state",
    ["workflow", "state"],
)
WORKFLOW_RUNNING = Gauge(
    "opendoctor_workflow_executions_running", "Workflow executions this engine runs now"
)
WORKFLOW_COMMIT_RECORDS = Histogram(
    "opendoctor_workflow_commit_records",
    "Records (executions, tasks, action executions) written by one group commit",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
WORKFLOW_COMMIT = Histogram(
    "opendoctor_workflow_commit_seconds", "Time of one group commit", buckets=_BUCKETS
)
WORKFLOW_TAKEOVERS = Counter(
    "opendoctor_workflow_takeovers_total",
    "Workflow executions this engine took over from a stopped or dead one",
)
RULE_EVALUATION = Histogram(
    "opendoctor_rule_evaluation_seconds",
    "Time to bring the rule templates' matches up to date after a change",
    buckets=_BUCKETS,
)
DEDUCED_ALARMS = Gauge("opendoctor_deduced_alarms", "Alarms the rule templates currently deduce")
