"""`opendoctor workflow ...`: a file checked here (the problem with its line), and the
commands against a running service: add, list, run --wait, executions, tasks, actions,
pause, resume, cancel, delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opendoctor.cli import app
from tests.live import live_api
from tests.workflow_texts import GREET, SLOW

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        "validate",
        "add",
        "update",
        "list",
        "show",
        "delete",
        "run",
        "executions",
        "execution",
        "pause",
        "resume",
        "cancel",
        "tasks",
        "actions",
    ],
)
def test_every_workflow_command_explains_itself(command: str) -> None:
    result = runner.invoke(app, ["workflow", command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_validate_says_valid(tmp_path: Path) -> None:
    (tmp_path / "greet.yaml").write_text(GREET)
    result = runner.invoke(app, ["workflow", "validate", str(tmp_path / "greet.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid: greet (2 tasks)" in result.output


def test_validate_prints_the_problem_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(GREET.replace("std.noop", "std.nope"))
    result = runner.invoke(app, ["workflow", "validate", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 1
    assert "is not a valid workflow file" in result.output
    assert "line 14:" in result.output and "std.nope" in result.output
    as_json = runner.invoke(app, ["workflow", "validate", "--json", str(tmp_path / "bad.yaml")])
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout)
    assert body["valid"] is False and body["error"].startswith("line 14:")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    with live_api(tmp_path, workflow={"builtin": False}) as url:
        yield url


def test_workflow_commands_against_a_service(live: str, tmp_path: Path) -> None:
    api = ["--api", live]
    (tmp_path / "greet.yaml").write_text(GREET)
    (tmp_path / "slow.yaml").write_text(SLOW)
    added = runner.invoke(app, ["workflow", "add", str(tmp_path / "greet.yaml"), *api])
    assert added.exit_code == 0, added.output
    again = runner.invoke(app, ["workflow", "add", str(tmp_path / "greet.yaml"), *api])
    assert again.exit_code == 1 and "409" in again.output
    listed = runner.invoke(app, ["workflow", "list", "--json", *api])
    assert [w["name"] for w in json.loads(listed.stdout)] == ["greet"]
    shown = runner.invoke(app, ["workflow", "show", "greet", *api])
    assert shown.stdout == GREET

    ran = runner.invoke(
        app, ["workflow", "run", "greet", "-i", "who=world", "--wait", "--json", *api]
    )
    assert ran.exit_code == 0, ran.output
    execution = json.loads(ran.stdout)
    assert execution["state"] == "SUCCESS"
    assert {t["name"]: t["state"] for t in execution["tasks"]} == {
        "say": "SUCCESS",
        "rest": "SUCCESS",
    }
    table = runner.invoke(
        app, ["workflow", "run", "greet", "--input", '{"who": "x"}', "--wait", *api]
    )
    assert table.exit_code == 0 and "say" in table.stdout and "SUCCESS" in table.stdout
    bad = runner.invoke(app, ["workflow", "run", "greet", "-i", "whom=x", *api])
    assert bad.exit_code == 1 and "input" in bad.output

    runs = runner.invoke(app, ["workflow", "executions", "--state", "success", "--json", *api])
    assert execution["id"] in [e["id"] for e in json.loads(runs.stdout)]
    one = runner.invoke(app, ["workflow", "execution", execution["id"], *api])
    assert one.exit_code == 0 and execution["id"] in one.stdout
    say = next(t for t in execution["tasks"] if t["name"] == "say")
    tasks = runner.invoke(app, ["workflow", "tasks", execution["id"], *api])
    assert say["id"] in tasks.stdout  # ids whole
    calls = runner.invoke(app, ["workflow", "actions", say["id"], "--json", *api])
    assert [a["name"] for a in json.loads(calls.stdout)] == ["std.echo"]

    assert runner.invoke(app, ["workflow", "add", str(tmp_path / "slow.yaml"), *api]).exit_code == 0
    started = runner.invoke(app, ["workflow", "run", "slow", *api])
    slow_id = started.stdout.strip()
    for command, state in (("pause", "PAUSED"), ("resume", "RUNNING"), ("cancel", "CANCELLED")):
        result = runner.invoke(app, ["workflow", command, slow_id, *api])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"{slow_id}: {state}"
    late = runner.invoke(app, ["workflow", "resume", slow_id, *api])
    assert late.exit_code == 1 and "CANCELLED" in late.output

    deleted = runner.invoke(app, ["workflow", "delete", "greet", *api])
    assert deleted.exit_code == 0 and "deleted greet" in deleted.stdout
    gone = runner.invoke(app, ["workflow", "show", "greet", *api])
    assert gone.exit_code == 1 and "404" in gone.output
