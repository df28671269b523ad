"""Masakari notifications as the service understands them (no HTTP here).

masakari-monitors post three kinds of notification about a host of a failover segment;
each becomes what the service does anyway for a fault of that kind:

* COMPUTE_HOST (hostmonitor), event STOPPED, host_status NORMAL: a `compute.host.down`
  event for the host; event STARTED, or host_status other than NORMAL or none: ignored.
* VM (instancemonitor), event LIFECYCLE with vir_domain_event STOPPED_FAILED: a
  `compute.instance.lifecycle.exited` event for the instance; QEMU_GUEST_AGENT_ERROR
  (STOPPED_FAILED) or IO_ERROR (IO_ERROR_REPORT): `compute.instance.heartbeat.unhealthy`;
  any other: ignored.
* PROCESS (processmonitor), event STOPPED: scheduling on the host disabled; STARTED:
  enabled again.

A host with host_status other than NORMAL is not recovered, as in Masakari: its state is
not known, and evacuating from a host that may still run its servers runs them twice.

A notification that became an event takes its status, on reading, from the fault that
event opened or joined (`status_of`); its progress (`workflow_details`, `vmoves`) from
the fault's timeline and recovery records.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opendoctor.core.faults import Fault, RecoveryItem
from opendoctor.core.model import (
    CHECKPOINTS,
    HEARTBEAT_UNHEALTHY,
    HOST_DOWN,
    PROCESS_EXITED,
    Event,
    iso,
)
from opendoctor.core.segments import HaNotification, NotificationStatus

MONITOR = "masakari"
# Masakari's VM events that call for recovery: event -> the vir_domain_events that do.
VM_EVENTS: dict[str, tuple[str, ...]] = {
    "LIFECYCLE": ("STOPPED_FAILED",),
    "QEMU_GUEST_AGENT_ERROR": ("STOPPED_FAILED",),
    "IO_ERROR": ("IO_ERROR_REPORT",),
}
# The domain stopped: its process is gone. The others: it runs but does not serve.
VM_FAULT_TYPES = {
    "LIFECYCLE": PROCESS_EXITED,
    "QEMU_GUEST_AGENT_ERROR": HEARTBEAT_UNHEALTHY,
    "IO_ERROR": HEARTBEAT_UNHEALTHY,
}


@dataclass(frozen=True, slots=True)
class Decision:
    """What one notification asks the service to do: report a fault (`event`), turn
    scheduling on the host off or on (`host_enabled`), or nothing (`ignored`, why)."""

    event: Event | None = None
    host_enabled: bool | None = None
    ignored: str | None = None


def _upper(payload: dict[str, Any], key: str) -> str:
    return str(payload.get(key) or "").upper()


def decide(note: HaNotification, reporter: str, known_server: bool = True) -> Decision:
    """The action for a notification whose payload fits its type (the API checked it).
    `known_server`: for a VM notification, whether the VIM has its instance."""
    payload, event = note.payload, _upper(note.payload, "event")
    if note.type == "COMPUTE_HOST":
        status = _upper(payload, "host_status")
        if status != "NORMAL":
            why = f"host_status is {status}" if status else "no host_status"
            return Decision(ignored=f"{why}: a host in an unknown state is not recovered")
        if event != "STOPPED":
            return Decision(ignored=f"event {event}: nothing to recover")
        return Decision(event=_event(note, HOST_DOWN, reporter, None))
    if note.type == "VM":
        domain_event = _upper(payload, "vir_domain_event")
        if domain_event not in VM_EVENTS.get(event, ()):
            return Decision(ignored=f"{event} {domain_event}: not a failure that is recovered")
        instance = str(payload["instance_uuid"])
        if not known_server:
            return Decision(ignored=f"no server {instance} is known")
        return Decision(event=_event(note, VM_FAULT_TYPES[event], reporter, instance))
    if note.type == "PROCESS":
        if event in ("STOPPED", "STARTED"):
            return Decision(host_enabled=event == "STARTED")
        return Decision(ignored=f"event {event}: neither STOPPED nor STARTED")
    return Decision(ignored=f"unknown type {note.type}")


def _event(note: HaNotification, type_: str, reporter: str, instance: str | None) -> Event:
    """The fault event, with the notification's id: the fault it opens is found by it."""
    detected = min(note.generated_time, note.created_at)
    return Event(
        type=type_,
        hostname=note.hostname,
        status="down",
        time=note.generated_time,
        monitor=MONITOR,
        monitor_event_id=note.id,
        details={"reason": f"Masakari {note.type} notification {note.id}"},
        instance_id=instance,
        reporter=reporter,
        id=note.id,
        received=note.created_at,
        trace={"T01": detected},
    )


def opened_fault_id(event_id: str) -> str:
    """The id of the fault an event opens (`inspector.Inspector._open`)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"opendoctor:fault/{event_id}"))


def status_of(fault: Fault | None) -> NotificationStatus:
    """A notification's status from the fault its event opened or joined: none yet, new;
    recovery under way (or not begun), running; every server recovered, finished; some
    not, failed. A fault that cleared, or whose recovery found nothing to recover (T11
    with no servers), is finished."""
    if fault is None:
        return "new"
    results = {item.result for item in fault.recovery}
    if "pending" in results:
        return "running"
    if "failed" in results:
        return "failed"
    if results or fault.status == "cleared" or "T11" in fault.trace:
        return "finished"
    return "running"


def _stamp(at: float) -> str:
    # Masakari's progress details use this form (a space, not a T).
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _detail(at: float, message: str, progress: float) -> dict[str, Any]:
    return {"timestamp": _stamp(at), "message": message, "progress": f"{progress:.1f}"}


def _step(name: str, state: str, details: list[dict[str, Any]]) -> dict[str, Any]:
    progress = 1.0 if state == "SUCCESS" else float(details[-1]["progress"]) if details else 0.0
    return {"name": name, "state": state, "progress": progress, "progress_details": details}


def workflow_details(note: HaNotification, fault: Fault | None) -> list[dict[str, Any]]:
    """Masakari's `recovery_workflow_details`: the steps of the recovery, each with the
    progress details of what happened, from the fault's timeline and recovery records."""
    if note.type == "PROCESS" and note.updated_at is not None:
        state = {"finished": "SUCCESS", "failed": "FAILURE"}.get(note.status, "RUNNING")
        message = note.message or note.status
        return [_step("DisableComputeNodeTask", state, [_detail(note.updated_at, message, 1.0)])]
    if fault is None:
        return []
    if fault.instance_id is not None:
        return [_instance_step(fault)]
    return _host_steps(fault)


def _instance_step(fault: Fault) -> dict[str, Any]:
    """A server's fault: detected, owners told; then its recovery (a restart in place or
    a move), or its clearing (it came back by itself), ends it."""
    details = [
        _detail(r["at"], CHECKPOINTS.get(r["checkpoint"], r["checkpoint"]), 0.5)
        for r in fault.timeline()
    ]
    results = set()
    for item in fault.recovery:
        results.add(item.result)
        if item.finished is None:
            continue
        # What was done to it, where the recovery record says (`RecoveryItem.action`).
        action = getattr(item, "action", None) or "recovered"
        if item.result == "ok":
            text = f"instance {item.server_id} {action}, on {item.to_host or item.from_host}"
        else:
            text = f"instance {item.server_id} not recovered ({item.result}): {item.error}"
        details.append(_detail(item.finished, text, 1.0))
    if "pending" in results:
        return _step("InstanceFailureTask", "RUNNING", details)
    if "failed" in results:
        return _step("InstanceFailureTask", "FAILURE", details)
    if results:
        return _step("InstanceFailureTask", "SUCCESS", details)
    if fault.status == "cleared" and fault.cleared is not None:
        details.append(_detail(fault.cleared, f"instance {fault.instance_id} back", 1.0))
        return _step("InstanceFailureTask", "SUCCESS", details)
    return _step("InstanceFailureTask", "RUNNING", details)


def _host_steps(fault: Fault) -> list[dict[str, Any]]:
    trace, host = fault.trace, fault.hostname
    down = (
        [_detail(trace["T01"], f"failure of host {host} detected", 0.0)] if "T01" in trace else []
    )
    if "T04" in trace:
        down.append(_detail(trace["T04"], f"compute service of {host} forced down", 1.0))
    steps = [_step("DisableComputeServiceTask", "SUCCESS" if "T04" in trace else "RUNNING", down)]
    items = fault.recovery
    failed = any(i.result == "failed" for i in items)
    if "T05" in trace:
        fenced = [_detail(trace["T05"], f"host {host} powered off, confirmed", 1.0)]
        steps.append(_step("FenceHostTask", "SUCCESS", fenced))
    elif failed and "T06" not in trace:
        reasons = sorted({i.error or "not fenced" for i in items if i.result == "failed"})
        at = max((i.finished or fault.started) for i in items)
        steps.append(_step("FenceHostTask", "FAILURE", [_detail(at, "; ".join(reasons), 0.0)]))
    if items:
        steps.append(_evacuation_step(fault, items))
    return steps


def _evacuation_step(fault: Fault, items: list[RecoveryItem]) -> dict[str, Any]:
    details = []
    if "T06" in fault.trace:
        details.append(_detail(fault.trace["T06"], "first evacuation requested", 0.0))
    done = 0
    for item in sorted(items, key=lambda i: (i.finished or 0.0, i.server_id)):
        if item.result == "pending" or item.finished is None:
            continue
        done += 1
        progress = done / len(items)
        if item.result == "ok":
            text = f"instance {item.server_id} evacuated from {item.from_host} to {item.to_host}"
        else:
            text = f"instance {item.server_id} not recovered ({item.result}): {item.error}"
        details.append(_detail(item.finished, text, progress))
    if "T11" in fault.trace:
        details.append(_detail(fault.trace["T11"], "instances evacuated and serving", 1.0))
    results = {i.result for i in items}
    state = "RUNNING" if "pending" in results else "FAILURE" if "failed" in results else "SUCCESS"
    return _step("EvacuateInstancesTask", state, details)


_VMOVE_STATUS = {"ok": "succeeded", "failed": "failed", "cancelled": "ignored"}
_MOVE_TYPE = {"migrate": "migration", "live_migrate": "live_migration"}


def vmoves(note: HaNotification, fault: Fault | None) -> list[dict[str, Any]]:
    """Masakari's VM moves (API 1.3): one per server the host's recovery took on."""
    if fault is None:
        return []
    out = []
    for item in fault.recovery:
        move_id = str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"opendoctor:vmove/{note.id}/{item.server_id}")
        )
        status = _VMOVE_STATUS.get(item.result, "ongoing" if item.started else "pending")
        begun = item.started or item.requested
        out.append(
            {
                "id": move_id,
                "uuid": move_id,
                "notification_uuid": note.id,
                "instance_uuid": item.server_id,
                "instance_name": item.name,
                "source_host": item.from_host,
                "dest_host": item.to_host,
                "start_time": iso(begun) if begun else None,
                "end_time": iso(item.finished) if item.finished else None,
                "status": status,
                "type": _MOVE_TYPE.get(getattr(item, "action", None) or "", "evacuation"),
                "message": item.error,
                "created_at": iso(item.requested or fault.started),
                "updated_at": iso(item.finished) if item.finished else None,
                "deleted": False,
                "deleted_at": None,
            }
        )
    return out
