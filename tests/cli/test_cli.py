"""The command line: help everywhere, clear failures, settings precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from opendoctor.cli import app
from opendoctor.config import load_settings

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["monitor"],
        ["consumer"],
        ["demo"],
        ["bench", "notify"],
        ["lab"],
        ["lab", "up"],
        ["lab", "fail-host"],
        ["lab", "lb", "members"],
        ["topology"],
        ["alarms"],
        ["rca"],
        ["guest-agent"],
        ["bench", "switchover"],
        ["bench", "heartbeat"],
        ["bench", "graph"],
    ],
)
def test_every_command_explains_itself(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_serve_without_a_lab_says_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve"], env={"OPENDOCTOR_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert "no lab is running" in result.output
    assert "opendoctor lab up" in result.output


def test_serve_rejects_a_bad_config_file(tmp_path: Path) -> None:
    config = tmp_path / "opendoctor.toml"
    config.write_text("[monitor]\ninterval = -1\n")
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "invalid configuration" in result.output
    assert "monitor.interval" in result.output


def test_serve_rejects_a_bad_topology_file(tmp_path: Path) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text("entities: [{type: switch}]\n")
    config = tmp_path / "opendoctor.toml"
    config.write_text(f'[inspector]\ntopology_file = "{topology}"\n')
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "invalid topology file" in result.output
    assert "entities.0.id" in result.output


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "opendoctor.toml"
    config.write_text("[monitor]\ninterval = 0.2\nmisses = 5\n\n[api]\nport = 9100\n")
    monkeypatch.setenv("OPENDOCTOR_MONITOR__INTERVAL", "0.1")
    settings = load_settings(config)
    assert settings.monitor.interval == 0.1
    assert settings.monitor.misses == 5
    assert settings.api.port == 9100
    assert settings.db_url.endswith("opendoctor.db")
