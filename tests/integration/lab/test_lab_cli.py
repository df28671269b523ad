"""`opendoctor lab ...` from the command line, against a real detached lab."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opendoctor.lab import runner as lab_runner
from opendoctor.lab.cli import app

from .helpers import processes_matching

IP_PREFIX = "127.216"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "lab"
    try:
        yield directory
    finally:
        # A detached lab outlives the test unless it is stopped.
        lab_runner.stop(directory)


def test_cli_round_trip(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENDOCTOR_LAB_DIR", str(state_dir))
    cli = CliRunner()

    result = cli.invoke(app, ["status"])
    assert result.exit_code == 1 and "no lab is running" in result.output

    result = cli.invoke(app, ["up", "--hosts", "2", "--vms", "3", "--ip-prefix", IP_PREFIX])
    assert result.exit_code == 0, result.output
    assert "compute2" in result.output and "vm3" in result.output
    assert (state_dir / "lab.json").exists() and (state_dir / "lab.log").exists()

    result = cli.invoke(app, ["up", "--ip-prefix", IP_PREFIX])
    assert result.exit_code == 1 and "already running" in result.output

    result = cli.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert [h["name"] for h in status["hosts"]] == ["compute1", "compute2"]
    assert [s["name"] for s in status["servers"]] == ["vm1", "vm2", "vm3"]

    result = cli.invoke(app, ["fail-host", "compute7"])
    assert result.exit_code == 1 and "compute7" in result.output

    result = cli.invoke(app, ["fail-host", "compute1"])
    assert result.exit_code == 0 and "T00 =" in result.output
    status = json.loads(cli.invoke(app, ["status", "--json"]).output)
    assert status["hosts"][0]["alive"] is False

    result = cli.invoke(app, ["restore-host", "compute1"])
    assert result.exit_code == 0 and "running again" in result.output

    result = cli.invoke(app, ["status"])
    assert result.exit_code == 0 and "compute1" in result.output

    result = cli.invoke(app, ["down"])
    assert result.exit_code == 0 and "stopped" in result.output
    assert not (state_dir / "lab.json").exists()
    assert processes_matching(f" {IP_PREFIX}.") == []
    result = cli.invoke(app, ["down"])
    assert result.exit_code == 1


def test_cli_rejects_a_bad_spec(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["up", "--hosts", "0", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1 and "hosts" in result.output


def test_cli_help_explains_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "down", "status", "fail-host", "restore-host"):
        assert command in result.output
    result = CliRunner().invoke(app, ["up", "--help"])
    assert "--vm-mode" in result.output and "--state-dir" in result.output
