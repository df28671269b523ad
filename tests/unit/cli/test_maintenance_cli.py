"""`opendoctor maintenance ...` against a running service: start a session (its id
printed whole), list, status (tables, JSON, --watch), pause, resume, cancel; and what
the commands refuse before asking anything.

Sessions start in 2099: they wait for their owners and go no further unless cancelled."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opendoctor.cli import app
from tests.live import live_api

runner = CliRunner()
LATER = "2099-01-01 00:00:00"


@pytest.mark.parametrize("command", ["start", "list", "status", "pause", "resume", "cancel"])
def test_every_maintenance_command_explains_itself(command: str) -> None:
    result = runner.invoke(app, ["maintenance", command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "--all"),
        (["compute1", "--all"], "--all"),
        (["compute1", "--action", "reboot"], "workflow:NAME"),
        (["compute1", "--action", "workflow:"], "workflow:NAME"),
        (["compute1", "--metadata", "no-value"], "KEY=VALUE"),
        (["compute1", "--metadata", "count:=two"], "not JSON"),
    ],
)
def test_start_refuses_what_it_cannot_send(args: list[str], says: str) -> None:
    # No service at this address: the refusal comes before any request.
    result = runner.invoke(app, ["maintenance", "start", *args, "--api", "http://127.0.0.1:9"])
    assert result.exit_code == 2, result.output
    assert says in result.output


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    # No wait for MAINTENANCE_COMPLETE answers: a cancelled session ends at once.
    with live_api(tmp_path, maintenance={"complete_wait": 0}) as url:
        yield url


def test_maintenance_commands_against_a_service(live: str) -> None:
    api = ["--api", live]
    at = ["--at", LATER]
    given = ["--action", "dummy", "-m", "release=2026.10", "-m", "reboots:=1"]
    started = runner.invoke(
        app, ["maintenance", "start", "compute1", "compute2", *at, *given, *api]
    )
    assert started.exit_code == 0, started.output
    session_id = started.stdout.strip()
    assert str(uuid.UUID(session_id)) == session_id  # whole, ready to paste

    listed = runner.invoke(app, ["maintenance", "list", "--json", "--active", *api])
    assert [s["session_id"] for s in json.loads(listed.stdout)] == [session_id]
    table = runner.invoke(app, ["maintenance", "list", *api])
    assert session_id in table.stdout and "MAINTENANCE" in table.stdout

    shown = runner.invoke(app, ["maintenance", "status", session_id, "--json", *api])
    detail = json.loads(shown.stdout)
    assert detail["maintenance_at"] == LATER
    assert detail["metadata"] == {"release": "2026.10", "reboots": 1}
    assert detail["actions"] == [{"plugin": "dummy", "type": "host", "metadata": {}}]
    assert [h["name"] for h in detail["host_progress"]] == ["compute1", "compute2"]
    tables = runner.invoke(app, ["maintenance", "status", session_id, *api])
    assert tables.exit_code == 0, tables.output
    for seen in (session_id, "compute1", "compute2", "waiting", "0%"):
        assert seen in tables.stdout

    paused = runner.invoke(app, ["maintenance", "pause", session_id, *api])
    assert paused.stdout.strip() == f"{session_id}: MAINTENANCE, paused"
    resumed = runner.invoke(app, ["maintenance", "resume", session_id, *api])
    assert resumed.stdout.strip() == f"{session_id}: MAINTENANCE"

    busy = runner.invoke(app, ["maintenance", "start", "compute1", *api])
    assert busy.exit_code == 1 and "409" in busy.output and "compute1" in busy.output
    unknown = runner.invoke(app, ["maintenance", "start", "nowhere", *api])
    assert unknown.exit_code == 1 and "400" in unknown.output and "hosts" in unknown.output
    bad_time = runner.invoke(app, ["maintenance", "start", "compute3", "--at", "soon", *api])
    assert bad_time.exit_code == 1 and "maintenance_at" in bad_time.output

    cancelled = runner.invoke(app, ["maintenance", "cancel", session_id, *api])
    assert cancelled.exit_code == 0, cancelled.output
    assert session_id in cancelled.stdout
    watched = runner.invoke(
        app, ["maintenance", "status", session_id, "--watch", "--interval", "0.1", "--json", *api]
    )
    assert watched.exit_code == 1, watched.output  # it ended, not done
    assert json.loads(watched.stdout)["state"] == "MAINTENANCE_CANCELLED"
    ended = runner.invoke(app, ["maintenance", "status", session_id, "--watch", *api])
    assert ended.exit_code == 1 and "MAINTENANCE_CANCELLED" in ended.stdout
    late = runner.invoke(app, ["maintenance", "pause", session_id, *api])
    assert late.exit_code == 1 and "409" in late.output
    assert (
        runner.invoke(app, ["maintenance", "list", "--active", "--json", *api]).stdout.strip()
        == "[]"
    )


def test_watch_gives_up_at_its_timeout(live: str) -> None:
    api = ["--api", live]
    session_id = runner.invoke(
        app, ["maintenance", "start", "--all", "--at", LATER, *api]
    ).stdout.strip()
    watched = runner.invoke(
        app,
        [
            "maintenance",
            "status",
            session_id,
            "--watch",
            "--interval",
            "0.1",
            "--timeout",
            "0.3",
            *api,
        ],
    )
    assert watched.exit_code == 2, watched.output  # it goes on
    assert "compute3" in watched.stdout and "MAINTENANCE" in watched.stdout
    missing = runner.invoke(app, ["maintenance", "status", "no-such-session", *api])
    assert missing.exit_code == 1 and "404" in missing.output
