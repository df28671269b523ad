"""The real python-aodhclient (its `aodh` command, as operators and VNF managers run it)
against the alarm API on a real port: create, list with a query, show and update by
name, state, history (search included), capabilities, delete.

Who calls is a parameter of the `aodh` fixture, so that the same scenario runs with each
way a client proves its identity:

* `noauth`: aodhclient's own `aodh-noauth` keystoneauth plugin, which sends
  X-User-Id/X-Project-Id/X-Roles straight to `--aodh-endpoint`; opendoctor believes them
  from loopback (api.auth_mode `trusted-headers`).
* `keystone` (to come with the Keystone test bed): password auth, the endpoint found in
  the catalog (service type `alarming`). Add the parameter to `AUTH_MODES` and a branch
  to `credentials`; the scenario does not change.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aodhclient import client as aodh_client
from aodhclient import exceptions as aodh_errors
from aodhclient.noauth import AodhNoAuthPlugin
from aodhclient.shell import AodhShell
from keystoneauth1 import session as ks_session

from tests.live import live_api

AUTH_MODES = ["noauth"]
VM1 = "6a8a4c7b-0f3e-4a8e-9e44-3d2b4b1c9f01"
VM2 = "6a8a4c7b-0f3e-4a8e-9e44-3d2b4b1c9f02"
PEOPLE = {  # who: (user, project, roles)
    "a": ("vnfm-a", "project-a", "member"),
    "b": ("vnfm-b", "project-b", "member"),
    "admin": ("operator", "admin", "admin"),
}


class AodhFailed(Exception):
    """The `aodh` command ended with an error; the message is what it printed."""


Aodh = Callable[..., Any]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    with live_api(tmp_path) as url:
        yield url


@pytest.fixture(params=AUTH_MODES)
def auth(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def credentials(mode: str, url: str, who: str) -> list[str]:
    """The `aodh` options that make it act for `who` in this auth mode."""
    user, project, roles = PEOPLE[who]
    if mode == "noauth":
        return [
            "--os-auth-type",
            "aodh-noauth",
            "--aodh-endpoint",
            url,
            "--user-id",
            user,
            "--project-id",
            project,
            "--roles",
            roles,
        ]
    raise AssertionError(f"no credentials for auth mode {mode}")


@pytest.fixture
def aodh(live: str, auth: str, monkeypatch: pytest.MonkeyPatch) -> Aodh:
    """`aodh(who, *args)`: runs the aodh command in this process as `who` and returns
    what it printed, parsed from JSON (None when it prints nothing), or raises
    AodhFailed with what it printed on stderr."""

    def run(who: str, *args: str) -> Any:
        argv = [*credentials(auth, live, who), *args]
        # The shell finds the auth plugin's options from sys.argv, not from `argv`.
        monkeypatch.setattr(sys, "argv", ["aodh", *argv])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = AodhShell().run(argv)
        if status != 0:
            raise AodhFailed(err.getvalue() or out.getvalue())
        text = out.getvalue().strip()
        return json.loads(text) if text else None

    return run


def as_dict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`aodh ... show -f json` prints an object; `-f json` of a list prints rows."""
    return {row["Field"]: row["Value"] for row in rows} if isinstance(rows, list) else rows


def create(aodh: Aodh, who: str, name: str, vm: str, severity: str) -> dict[str, Any]:
    return as_dict(
        aodh(
            who,
            "alarm",
            "create",
            "--type",
            "event",
            "--name",
            name,
            "--event-type",
            "compute.instance.update",
            "--query",
            f"traits.instance_id=string::{vm};traits.state=string::error",
            "--alarm-action",
            "log://",
            "--severity",
            severity,
            "-f",
            "json",
        )
    )


def test_the_aodh_command_drives_the_whole_event_alarm_api(aodh: Aodh) -> None:
    vm1 = create(aodh, "a", "vm1-down", VM1, "critical")
    vm2 = create(aodh, "a", "vm2-down", VM2, "low")
    theirs = create(aodh, "b", "vm1-down", VM1, "low")  # the same name, another project
    assert (vm1["type"], vm1["project_id"], vm1["state"]) == (
        "event",
        "project-a",
        "insufficient data",
    )

    # List with a complex query, with the simple one, sorted and paged.
    found = aodh("a", "alarm", "list", "--query", 'name="vm1-down"', "-f", "json")
    assert [a["alarm_id"] for a in found] == [vm1["alarm_id"]]
    either = 'name="vm2-down" or severity=critical'
    found = aodh("a", "alarm", "list", "--query", either, "-f", "json")
    assert sorted(a["name"] for a in found) == ["vm1-down", "vm2-down"]
    low = aodh("a", "alarm", "list", "--filter", "severity=low", "-f", "json")
    assert [a["alarm_id"] for a in low] == [vm2["alarm_id"]]
    first = aodh("a", "alarm", "list", "--sort", "name:desc", "--limit", "1", "-f", "json")
    assert [a["name"] for a in first] == ["vm2-down"]
    rest = ["--sort", "name:desc", "--marker", first[0]["alarm_id"]]
    assert [a["name"] for a in aodh("a", "alarm", "list", *rest, "-f", "json")] == ["vm1-down"]

    # Show and update by name (both look the alarm up with the complex query).
    shown = as_dict(aodh("a", "alarm", "show", "--name", "vm1-down", "-f", "json"))
    assert shown["alarm_id"] == vm1["alarm_id"]
    assert as_dict(aodh("a", "alarm", "show", "vm2-down", "-f", "json"))["severity"] == "low"
    updated = as_dict(
        aodh("a", "alarm", "update", "--name", "vm1-down", "--severity", "moderate", "-f", "json")
    )
    assert (updated["alarm_id"], updated["severity"]) == (vm1["alarm_id"], "moderate")
    described = ["--description", "VM 1 of the pair", "-f", "json"]
    updated = as_dict(aodh("a", "alarm", "update", "vm1-down", *described))
    assert updated["description"] == "VM 1 of the pair"
    assert updated["event_type"] == "compute.instance.update"  # the rule is kept

    # State, by name.
    state = as_dict(
        aodh("a", "alarm", "state", "set", "--name", "vm1-down", "--state", "alarm", "-f", "json")
    )
    assert state["state"] == "alarm"
    assert as_dict(aodh("a", "alarm", "state", "get", vm1["alarm_id"], "-f", "json")) == {
        "state": "alarm"
    }

    # History: of one alarm, and searched with a query.
    history = aodh("a", "alarm-history", "show", vm1["alarm_id"], "-f", "json")
    assert [h["type"] for h in history] == [
        "state transition",
        "rule change",
        "rule change",
        "creation",
    ]
    search = f'alarm_id={vm1["alarm_id"]} and type="state transition"'
    found = aodh("a", "alarm-history", "search", "--query", search, "-f", "json")
    assert [json.loads(h["detail"])["state"] for h in found] == ["alarm"]

    capabilities = as_dict(aodh("a", "capabilities", "list", "-f", "json"))
    assert capabilities["api"]["alarms:query:complex"] is True
    assert capabilities["api"]["alarms:history:query:complex"] is True

    # Delete by name; the history stays, and an admin searches it.
    aodh("a", "alarm", "delete", "--name", "vm2-down")
    assert [a["name"] for a in aodh("a", "alarm", "list", "-f", "json")] == ["vm1-down"]
    with pytest.raises(AodhFailed, match="not found"):
        aodh("a", "alarm", "show", "--name", "vm2-down")
    gone = f"alarm_id={vm2['alarm_id']}"
    kept = aodh("admin", "alarm-history", "search", "--query", gone, "-f", "json")
    assert [h["type"] for h in kept] == ["deletion", "creation"]

    # Each project sees its own: project-b's vm1-down is not project-a's.
    assert [a["alarm_id"] for a in aodh("b", "alarm", "list", "-f", "json")] == [theirs["alarm_id"]]
    shown = as_dict(aodh("b", "alarm", "show", "--name", "vm1-down", "-f", "json"))
    assert shown["alarm_id"] == theirs["alarm_id"]
    with pytest.raises(AodhFailed, match="not found"):
        aodh("b", "alarm", "delete", vm1["alarm_id"])
    with pytest.raises(AodhFailed, match="only an admin may query another project"):
        aodh("b", "alarm", "list", "--query", 'project_id="project-a"')  # our message
    assert len(aodh("admin", "alarm", "list", "-f", "json")) == 2


def test_the_python_client_hears_that_only_event_alarms_are_served(live: str) -> None:
    """aodhclient's Client, built on a keystoneauth session as services build it."""
    user, project, roles = PEOPLE["a"]
    auth = AodhNoAuthPlugin(user, project, roles, live)
    client = aodh_client.Client("2", session=ks_session.Session(auth=auth))
    threshold = {
        "name": "cpu-high",
        "type": "threshold",
        "threshold_rule": {"meter_name": "cpu_util", "threshold": 90.0},
    }
    with pytest.raises(aodh_errors.BadRequest) as raised:
        client.alarm.create(threshold)
    assert "only 'event' alarms are served" in str(raised.value)
    assert client.alarm.list() == []
