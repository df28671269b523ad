"""The real python-aodhclient (its `aodh` command, as operators and VNF managers run it)
against opendoctor's alarm API: one scenario, run for each way a client proves who it is.

* `tests/integration/api/test_aodhclient.py`: aodhclient's `aodh-noauth` plugin, which
  sends X-User-Id/X-Project-Id/X-Roles straight to `--aodh-endpoint` (api.auth_mode
  `trusted-headers`, believed from loopback).
* `tests/openstack_bed/test_aodhclient_keystone.py`: password auth against the bed's
  real Keystone, opendoctor found in its catalog (service type `alarming`); project and
  roles come from the token (api.auth_mode `keystone`).

A way of logging in is a `Login`: the `aodh` options, and the environment variables,
that make the command act for a `Person`. The scenario asks only `AodhCommand` for who
is who, so it compares with whatever ids the auth mode gives (names with noauth, UUIDs
with Keystone).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aodhclient.shell import AodhShell

VM1 = "6a8a4c7b-0f3e-4a8e-9e44-3d2b4b1c9f01"
VM2 = "6a8a4c7b-0f3e-4a8e-9e44-3d2b4b1c9f02"


@dataclass(frozen=True, slots=True)
class Person:
    """Someone the scenario runs `aodh` as: two tenants ("a", "b") and an admin."""

    user: str  # the name to log in with (noauth: also the id)
    user_id: str
    project: str  # the name to log in with (noauth: also the id)
    project_id: str
    roles: str  # what noauth claims; Keystone puts the user's roles in the token
    password: str = field(default="", repr=False)


# The `aodh` options and environment variables that make it act for a person.
Login = Callable[[Person], tuple[list[str], dict[str, str]]]


class AodhFailed(Exception):
    """The `aodh` command ended with an error; the message is what it printed."""


class AodhCommand:
    """`aodh(who, *args)`: runs the aodh command in this process as `people[who]` and
    returns what it printed, parsed from JSON (None when it prints nothing), or raises
    AodhFailed with what it printed on stderr."""

    def __init__(self, people: Mapping[str, Person], login: Login) -> None:
        self.people = people
        self.login = login

    def __call__(self, who: str, *args: str) -> Any:
        options, env = self.login(self.people[who])
        argv = [*options, *args]
        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as patch:
            # Only what `login` gives: no OS_*/AODH_* of whoever runs the tests.
            for name in os.environ:
                if name.startswith(("OS_", "AODH_")):
                    patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            # The shell finds the auth plugin's options from sys.argv, not from `argv`.
            patch.setattr(sys, "argv", ["aodh", *argv])
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = AodhShell().run(argv)
        if status != 0:
            raise AodhFailed(err.getvalue() or out.getvalue())
        text = out.getvalue().strip()
        return json.loads(text) if text else None


def as_dict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`aodh ... show -f json` prints an object; `-f json` of a list prints rows."""
    return {row["Field"]: row["Value"] for row in rows} if isinstance(rows, list) else rows


def create(aodh: AodhCommand, who: str, name: str, vm: str, severity: str) -> dict[str, Any]:
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


def the_aodh_command_drives_the_whole_event_alarm_api(aodh: AodhCommand) -> None:
    """Create, list with a query, show and update by name, state, history (search
    included), capabilities, delete; each project sees its own, the admin all."""
    tenant, other = aodh.people["a"], aodh.people["b"]
    vm1 = create(aodh, "a", "vm1-down", VM1, "critical")
    vm2 = create(aodh, "a", "vm2-down", VM2, "low")
    theirs = create(aodh, "b", "vm1-down", VM1, "low")  # the same name, another project
    assert (vm1["type"], vm1["project_id"], vm1["user_id"], vm1["state"]) == (
        "event",
        tenant.project_id,
        tenant.user_id,
        "insufficient data",
    )
    assert (theirs["project_id"], theirs["user_id"]) == (other.project_id, other.user_id)

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
        aodh("b", "alarm", "list", "--query", f'project_id="{tenant.project_id}"')  # our message
    everyone = aodh("admin", "alarm", "list", "-f", "json")
    assert sorted(a["alarm_id"] for a in everyone) == sorted([vm1["alarm_id"], theirs["alarm_id"]])
