"""The real python-masakariclient and openstacksdk's `instance_ha` proxy against the
Masakari-compatible API on a real port.

The proxy is built by masakariclient's own `make_client` (as `openstack segment ...`
builds it) on a keystoneauth session with the `noauth` plugin: the session sends
X-User-Id/X-Project-Id/X-Roles with each request and opendoctor believes them from
loopback (api.auth_mode `trusted-headers`), as in `test_aodhclient.py`. The
masakariclient commands run in process, each as the `openstack` shell would run it
(its parser, then its action), with that proxy as the client.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from keystoneauth1 import noauth
from keystoneauth1 import session as ks_session
from masakariclient import plugin
from masakariclient.osc.v1 import host as host_cmd
from masakariclient.osc.v1 import notification as notification_cmd
from masakariclient.osc.v1 import segment as segment_cmd
from masakariclient.osc.v1 import vmove as vmove_cmd
from openstack import exceptions as sdk_errors
from openstack.instance_ha.v1._proxy import Proxy

from tests.integration.pipeline.conftest import ADMIN, lab_vim, opted_in
from tests.live import live_api

ADMIN_USER = {"X-User-Id": "operator", **ADMIN}
MEMBER = {"X-User-Id": "vnfm-a", "X-Project-Id": "project-a", "X-Roles": "member"}
VM1, VM4 = "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000004"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    # No fence devices on the in-memory VIM: recovery evacuates unfenced.
    recovery = {"fencing": {"without_device": "evacuate"}}
    with live_api(tmp_path, opted_in(lab_vim()), recovery=recovery) as url:
        yield url


def instance_ha(url: str, headers: dict[str, str], endpoint: str = "/instance-ha/v1") -> Proxy:
    """The proxy masakariclient's plugin makes, on a session that claims `headers`."""
    session = ks_session.Session(
        auth=noauth.NoAuth(endpoint=url + endpoint), additional_headers=headers
    )
    instance = SimpleNamespace(
        session=session,
        interface="public",
        region_name=None,
        _api_version={plugin.API_NAME: plugin.DEFAULT_HA_API_VERSION},
    )
    proxy: Proxy = plugin.make_client(instance)
    return proxy


class Masakari:
    """`masakari(Command, *argv)`: one masakariclient command, parsed and run as the
    `openstack` shell runs it; a ShowOne's answer as a dict, a Lister's as dicts."""

    def __init__(self, proxy: Proxy) -> None:
        self.app = SimpleNamespace(client_manager=SimpleNamespace(ha=proxy))

    def __call__(self, command: type[Any], *argv: str) -> Any:
        cmd = command(self.app, None)
        args = cmd.get_parser("openstack").parse_args(list(argv))
        answer = cmd.take_action(args)
        if answer is None:
            return None
        columns, values = answer
        if isinstance(values, tuple):
            return dict(zip(columns, values, strict=True))
        return [dict(zip(columns, row, strict=True)) for row in values]


def test_the_masakari_commands_drive_segments_hosts_and_notifications(live: str) -> None:
    proxy = instance_ha(live, ADMIN_USER)
    assert proxy.default_microversion == "1.3"
    masakari = Masakari(proxy)

    seg = masakari(segment_cmd.CreateSegment, "seg-1", "auto", "COMPUTE", "--description", "rack 1")
    assert seg["name"] == "seg-1" and seg["recovery_method"] == "auto"
    assert seg["is_enabled"] is True and seg["description"] == "rack 1"
    masakari(
        segment_cmd.CreateSegment, "spare", "reserved_host", "COMPUTE", "--is_enabled", "False"
    )
    listed = masakari(segment_cmd.ListSegment, "--sort", "name:asc")
    assert [(s["name"], s["is_enabled"]) for s in listed] == [("seg-1", True), ("spare", False)]
    assert masakari(segment_cmd.ShowSegment, "spare")["recovery_method"] == "reserved_host"
    changed = masakari(segment_cmd.UpdateSegment, "spare", "--description", "kept empty")
    assert changed["description"] == "kept empty"
    with pytest.raises(sdk_errors.ConflictException):
        masakari(segment_cmd.CreateSegment, "seg-1", "auto", "COMPUTE")

    host = masakari(host_cmd.CreateHost, "compute1", "COMPUTE", "SSH", "seg-1")
    assert host["name"] == "compute1" and host["failover_segment_id"] == seg["uuid"]
    assert host["reserved"] is False and host["on_maintenance"] is False
    masakari(host_cmd.CreateHost, "compute3", "COMPUTE", "SSH", "spare", "--reserved", "True")
    with pytest.raises(sdk_errors.ConflictException):
        masakari(host_cmd.CreateHost, "compute1", "COMPUTE", "SSH", "spare")
    with pytest.raises(sdk_errors.BadRequestException) as raised:
        masakari(host_cmd.CreateHost, "compute42", "COMPUTE", "SSH", "spare")
    assert "the VIM has no compute host 'compute42'" in str(raised.value)
    hosts = masakari(host_cmd.ListHost, "spare")
    assert [(h["name"], h["reserved"]) for h in hosts] == [("compute3", True)]
    shown = masakari(host_cmd.UpdateHost, "spare", "compute3", "--on_maintenance", "True")
    assert shown["on_maintenance"] is True
    assert masakari(host_cmd.ShowHost, "spare", "compute3")["on_maintenance"] is True
    masakari(host_cmd.DeleteHost, "spare", "compute3")
    assert masakari(host_cmd.ListHost, "spare") == []
    masakari(segment_cmd.DeleteSegment, "spare")
    assert [s["name"] for s in masakari(segment_cmd.ListSegment)] == ["seg-1"]

    # What the hostmonitor reports when compute1 goes down, as the command sends it.
    payload = '{"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}'
    note = masakari(
        notification_cmd.CreateNotification,
        "COMPUTE_HOST",
        "compute1",
        "2026-12-04T10:00:00.000000",
        payload,
    )
    assert note["type"] == "COMPUTE_HOST" and note["source_host_uuid"] == host["uuid"]
    note_id = note["notification_uuid"]
    shown = _until_settled(masakari, note_id)
    assert shown["status"] == "finished"
    steps = {s["name"]: s["state"] for s in shown["recovery_workflow_details"]}
    assert steps["EvacuateInstancesTask"] == "SUCCESS"
    notes = masakari(notification_cmd.ListNotification, "--filters", "status=finished")
    assert [n["notification_uuid"] for n in notes] == [note_id]
    moves = masakari(vmove_cmd.ListVMove, note_id)
    assert {m["server_id"] for m in moves} == {VM1, VM4}
    assert {m["status"] for m in moves} == {"succeeded"}
    with pytest.raises(sdk_errors.ConflictException):  # the same again: a duplicate
        masakari(
            notification_cmd.CreateNotification,
            "COMPUTE_HOST",
            "compute1",
            "2026-12-04T10:00:00.000000",
            payload,
        )


def _until_settled(masakari: Masakari, note_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        shown: dict[str, Any] = masakari(notification_cmd.ShowNotification, note_id)
        if shown["status"] not in ("new", "running") or time.monotonic() > deadline:
            return shown
        time.sleep(0.05)


def test_the_hostmonitors_post_opens_the_fault_for_its_host(live: str) -> None:
    """The request exactly as masakari-monitors' hostmonitor sends it (through
    openstacksdk's create_notification), and the same JSON posted by hand."""
    proxy = instance_ha(live, ADMIN_USER)
    seg = proxy.create_segment(name="seg", recovery_method="auto", service_type="COMPUTE")
    proxy.create_host(seg.uuid, name="compute1", type="COMPUTE", control_attributes="SSH")
    proxy.create_host(seg.uuid, name="compute2", type="COMPUTE", control_attributes="SSH")

    note = proxy.create_notification(
        type="COMPUTE_HOST",
        hostname="compute1",
        generated_time="2026-12-04T10:00:00.000000",
        payload={"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"},
    )
    fault_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"opendoctor:fault/{note.notification_uuid}"))
    fault = _fault(live, fault_id)
    assert (fault["type"], fault["hostname"], fault["status"]) == (
        "compute.host.down",
        "compute1",
        "active",
    )

    body = {
        "notification": {
            "type": "COMPUTE_HOST",
            "hostname": "compute2",
            "generated_time": "2026-12-04T10:00:00.000000",
            "payload": {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"},
        }
    }
    resp = httpx.post(f"{live}/instance-ha/v1/notifications", json=body, headers=ADMIN_USER)
    assert resp.status_code == 202, resp.text
    posted = resp.json()["notification"]
    fault_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"opendoctor:fault/{posted['id']}"))
    assert _fault(live, fault_id)["hostname"] == "compute2"

    # Only admins (Masakari's policy); and under the project's id too (its catalog URL).
    with pytest.raises(sdk_errors.ForbiddenException):
        list(instance_ha(live, MEMBER).segments())
    in_project = instance_ha(live, ADMIN_USER, "/instance-ha/v1/admin")
    assert [s.name for s in in_project.segments()] == ["seg"]


def _fault(live: str, fault_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        resp = httpx.get(f"{live}/v1/faults/{fault_id}", headers=ADMIN_USER)
        if resp.status_code == 200 or time.monotonic() > deadline:
            assert resp.status_code == 200, resp.text
            fault: dict[str, Any] = resp.json()
            return fault
        time.sleep(0.05)
