"""`opendoctor lab lb ...` and the VM commands, against a real detached lab."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opendoctor.lab.spec import EVENTS_TOKEN_ENV

from .helpers import run_cli as run

IP_PREFIX = "127.220"


def test_lb_and_vm_commands(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    events = "http://127.0.0.1:9/events"  # nothing listens: events wait in the hosts
    monkeypatch.setenv(EVENTS_TOKEN_ENV, "t0k")
    run(cli, "up", "--hosts", "1", "--vms", "2", "--ip-prefix", IP_PREFIX, "--events-url", events,
        "--no-heartbeat")  # fmt: skip
    output = run(cli, "events-sink")
    assert events in output and "(token set)" in output and "compute1" in output

    output = run(cli, "lb", "create-pool", "web", "vm1", "vm2", "--disable", "vm2")
    assert f"http://{IP_PREFIX}.250.1:8080/" in output
    pool = json.loads(run(cli, "lb", "pools", "--json"))[0]
    assert pool["name"] == "web"
    assert "web" in run(cli, "lb", "pools")

    members = json.loads(run(cli, "lb", "members", "--pool", pool["id"], "--json"))
    assert [(m["server_name"], m["admin_state_up"]) for m in members] == [
        ("vm1", True),
        ("vm2", False),
    ]
    table = run(cli, "lb", "members")
    for column in ("id", "address", "protocol_port", "weight", "admin_state_up", "status"):
        assert column in table
    assert members[0]["id"] in table and "INACTIVE" in table

    vm1, vm2 = members
    output = run(cli, "lb", "set-member", vm2["id"][:8], "--enable")
    assert "admin_state_up=True" in output
    run(cli, "lb", "set-member", vm1["id"], "--disable")
    members = json.loads(run(cli, "lb", "members", "--json"))
    assert [m["admin_state_up"] for m in members] == [False, True]
    assert "more than one" in run(cli, "lb", "set-member", "", "--enable", code=1)
    assert "no member" in run(cli, "lb", "set-member", "zzz", "--enable", code=1)
    run(cli, "lb", "set-member", vm1["id"], code=2)  # --enable or --disable is required

    assert "vm2 is now standby" in run(cli, "set-role", "vm2", "standby")
    assert "unhealthy" in run(cli, "set-health", "vm2", "--unhealthy")
    status = json.loads(run(cli, "status", "--json"))
    assert [(s["role"], s["healthy"]) for s in status["servers"]] == [
        ("active", True),
        ("standby", False),
    ]
    assert "T00 =" in run(cli, "kill-server", "vm1")
    assert "not running" in run(cli, "kill-server", "vm1", code=1)
    assert "no server" in run(cli, "kill-server", "vm9", code=1)
    output = run(cli, "events-sink")
    assert "1 pending" in output
    assert "restarted on compute1" in run(cli, "restart-server", "vm1")

    output = run(cli, "events-sink", "--clear")
    assert "(none)" in output
    run(cli, "lb", "delete-pool", pool["id"])
    assert json.loads(run(cli, "lb", "pools", "--json")) == []
    run(cli, "down")
