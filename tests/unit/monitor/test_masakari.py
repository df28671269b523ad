"""What each Masakari notification becomes, and what a fault says of its notification."""

from __future__ import annotations

from typing import Any

import pytest

from opendoctor.core.faults import Fault, RecoveryItem
from opendoctor.core.model import HEARTBEAT_UNHEALTHY, HOST_DOWN, PROCESS_EXITED
from opendoctor.core.segments import HaNotification
from opendoctor.monitor.masakari import (
    decide,
    opened_fault_id,
    status_of,
    vmoves,
    workflow_details,
)

VM = "6a8a4c7b-0f3e-4a8e-9e44-3d2b4b1c9f01"


def note(type_: str, **payload: Any) -> HaNotification:
    return HaNotification(type_, "compute1", 1000.0, payload, created_at=1002.0)


def test_the_hostmonitors_stopped_host_is_a_host_down_event_with_the_notifications_id() -> None:
    n = note("COMPUTE_HOST", event="STOPPED", cluster_status="OFFLINE", host_status="NORMAL")
    event = decide(n, "masakari:operator").event
    assert event is not None
    assert (event.type, event.hostname, event.status) == (HOST_DOWN, "compute1", "down")
    assert event.instance_id is None and event.active
    assert event.id == n.id and event.monitor_event_id == n.id
    assert event.reporter == "masakari:operator"
    assert event.time == 1000.0 and event.trace == {"T01": 1000.0}


@pytest.mark.parametrize(
    "payload",
    [
        {"event": "STARTED", "host_status": "NORMAL"},
        {"event": "STOPPED", "host_status": "UNKNOWN"},  # not known down: never evacuated
        {"event": "STOPPED"},
    ],
)
def test_other_host_notifications_are_ignored(payload: dict[str, str]) -> None:
    decision = decide(note("COMPUTE_HOST", **payload), "m")
    assert decision.event is None and decision.ignored


@pytest.mark.parametrize(
    ("event", "domain_event", "fault_type"),
    [
        ("LIFECYCLE", "STOPPED_FAILED", PROCESS_EXITED),
        ("QEMU_GUEST_AGENT_ERROR", "STOPPED_FAILED", HEARTBEAT_UNHEALTHY),
        ("IO_ERROR", "IO_ERROR_REPORT", HEARTBEAT_UNHEALTHY),
    ],
)
def test_a_failed_vm_is_a_fault_of_that_server(
    event: str, domain_event: str, fault_type: str
) -> None:
    n = note("VM", event=event, instance_uuid=VM, vir_domain_event=domain_event)
    made = decide(n, "m").event
    assert made is not None
    assert (made.type, made.hostname, made.instance_id) == (fault_type, "compute1", VM)


def test_other_vm_events_and_unknown_servers_are_ignored() -> None:
    stopped = note("VM", event="LIFECYCLE", instance_uuid=VM, vir_domain_event="STOPPED_DESTROYED")
    assert decide(stopped, "m").ignored
    failed = note("VM", event="LIFECYCLE", instance_uuid=VM, vir_domain_event="STOPPED_FAILED")
    assert decide(failed, "m", known_server=False).ignored == f"no server {VM} is known"


def test_a_process_notification_turns_scheduling_on_the_host_off_or_on() -> None:
    assert (
        decide(note("PROCESS", event="STOPPED", process_name="nova-compute"), "m").host_enabled
        is False
    )
    assert (
        decide(note("PROCESS", event="started", process_name="nova-compute"), "m").host_enabled
        is True
    )


def _fault(*results: str, status: str = "active") -> Fault:
    fault = Fault(opened_fault_id("e1"), HOST_DOWN, "compute1", 10.0, status=status)
    fault.trace = {"T01": 10.0, "T04": 10.1, "T05": 10.5, "T06": 10.6}
    for i, result in enumerate(results):
        fault.recovery.append(
            RecoveryItem(
                f"vm{i}",
                f"vm{i}",
                "compute1",
                "compute2" if result == "ok" else None,
                started=10.6,
                finished=None if result == "pending" else 11.0 + i,
                result=result,
                error="no room" if result == "failed" else None,
                requested=10.55,
            )
        )
    return fault


def test_the_status_follows_the_fault_and_its_recovery() -> None:
    assert status_of(None) == "new"
    assert status_of(_fault()) == "running"  # recovery not begun
    assert status_of(_fault("ok", "pending")) == "running"
    assert status_of(_fault("ok", "failed", "pending")) == "running"  # not over yet
    assert status_of(_fault("ok", "ok")) == "finished"
    assert status_of(_fault("ok", "failed")) == "failed"
    assert status_of(_fault(status="cleared")) == "finished"  # nothing to recover


def test_the_workflow_details_tell_each_step_from_the_timeline() -> None:
    fault = _fault("ok", "failed")
    steps = workflow_details(note("COMPUTE_HOST", event="STOPPED"), fault)
    assert [(s["name"], s["state"]) for s in steps] == [
        ("DisableComputeServiceTask", "SUCCESS"),
        ("FenceHostTask", "SUCCESS"),
        ("EvacuateInstancesTask", "FAILURE"),
    ]
    evacuation = steps[2]["progress_details"]
    assert evacuation[0]["message"] == "first evacuation requested"
    assert "vm0 evacuated from compute1 to compute2" in evacuation[1]["message"]
    assert "no room" in evacuation[2]["message"] and evacuation[2]["progress"] == "1.0"
    assert evacuation[0]["timestamp"] == "1970-01-01 00:00:10.600000"
    assert workflow_details(note("COMPUTE_HOST"), None) == []


def test_vmoves_are_the_servers_recovery_took_on() -> None:
    n = note("COMPUTE_HOST", event="STOPPED")
    moves = vmoves(n, _fault("ok", "pending", "failed"))
    assert [m["status"] for m in moves] == ["succeeded", "ongoing", "failed"]
    assert moves[0]["dest_host"] == "compute2" and moves[0]["notification_uuid"] == n.id
    assert moves[0]["type"] == "evacuation" and moves[2]["message"] == "no room"
    assert vmoves(n, _fault("ok"))[0]["id"] == moves[0]["id"]  # stable


def test_a_servers_fault_shows_its_restart_or_that_it_came_back() -> None:
    fault = Fault("f", PROCESS_EXITED, "compute1", 10.0, instance_id=VM)
    fault.trace = {"T01": 10.0, "T02": 10.01}
    n = note("VM", event="LIFECYCLE", instance_uuid=VM, vir_domain_event="STOPPED_FAILED")
    (step,) = workflow_details(n, fault)
    assert (step["name"], step["state"]) == ("InstanceFailureTask", "RUNNING")
    assert [d["message"] for d in step["progress_details"]] == [
        "fault detected",
        "affected resources found",
    ]
    fault.recovery = [RecoveryItem(VM, "vm1", "compute1", finished=12.0, result="ok")]
    (step,) = workflow_details(n, fault)
    assert step["state"] == "SUCCESS" and VM in step["progress_details"][-1]["message"]
    assert status_of(fault) == "finished"
    fault.recovery, fault.status, fault.cleared = [], "cleared", 13.0
    (step,) = workflow_details(n, fault)
    assert step["state"] == "SUCCESS" and step["progress_details"][-1]["message"].endswith("back")
