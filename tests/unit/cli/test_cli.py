"""The command line: help everywhere, clear failures, settings precedence."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from opendoctor.api.templates import EXAMPLE_TEMPLATE
from opendoctor.cli import app
from opendoctor.core.settings import load_settings
from tests.conftest import MONITOR
from tests.integration.pipeline.conftest import host_down
from tests.live import live_api

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
        ["lab", "cut-link"],
        ["lab", "restore-link"],
        ["lab", "lb", "members"],
        ["topology"],
        ["alarms"],
        ["rca"],
        ["audit"],
        ["template"],
        ["template", "list"],
        ["template", "show"],
        ["template", "validate"],
        ["template", "add"],
        ["template", "delete"],
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
    # ... and how to use a real cloud instead.
    assert "OPENDOCTOR_VIM__DRIVER=openstack" in " ".join(result.output.split())


def test_serve_against_a_cloud_that_is_not_configured_says_so(tmp_path: Path) -> None:
    env = {
        "OPENDOCTOR_STATE_DIR": str(tmp_path),
        "OPENDOCTOR_VIM__DRIVER": "openstack",
        "OPENDOCTOR_VIM__OPENSTACK__CLOUD": "nowhere",
        "OS_CLIENT_CONFIG_FILE": str(tmp_path / "clouds.yaml"),
    }
    (tmp_path / "clouds.yaml").write_text("clouds: {}\n")
    result = runner.invoke(app, ["serve"], env=env)
    assert result.exit_code == 2, result.output
    assert "nowhere" in result.output


def test_uc2_on_openstack_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "uc2", "--vim", "openstack", "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert "UC2 runs on the lab only" in result.output
    assert list(tmp_path.iterdir()) == []


def test_openstack_lab_refuses_a_lab_prefix_off_loopback(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["openstack-lab", "up", "--lab-prefix", "10.0", "--dir", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "lab_prefix must look like '127.N'" in result.output
    assert list(tmp_path.iterdir()) == []


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


HOST_WATCH = EXAMPLE_TEMPLATE


def test_template_validate_says_valid(tmp_path: Path) -> None:
    path = tmp_path / "host_watch.yaml"
    path.write_text(HOST_WATCH)
    result = runner.invoke(app, ["template", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("valid: host_watch")
    result = runner.invoke(app, ["template", "validate", "--json", str(path)])
    assert json.loads(result.stdout) == {"valid": True, "name": "host_watch", "problems": []}


def test_template_validate_prints_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        HOST_WATCH.replace("alarm [on] host", "alarm [on] hots").replace(
            "raise_alarm:", "raise_alarrm:"
        )
    )
    result = runner.invoke(app, ["template", "validate", str(path)])
    assert result.exit_code == 1
    assert "is not a valid template" in result.output
    assert "line 7: condition names 'hots', which is not an entity" in result.output
    assert "line 9: unknown action 'raise_alarrm'" in result.output
    result = runner.invoke(app, ["template", "validate", "--json", str(path)])
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert body["valid"] is False and len(body["problems"]) == 2


def test_template_validate_checks_cycles_with_the_built_ins(tmp_path: Path) -> None:
    # Alone it is fine; with host_down (alarm on a host -> instance.host_down on its
    # servers) it closes a loop of causes.
    path = tmp_path / "loop.yaml"
    path.write_text(
        "name: loop\n"
        "entities:\n"
        "  server_alarm: {category: ALARM, name: instance.host_down}\n"
        "  server: {type: server}\n"
        "  host: {type: host}\n"
        "scenarios:\n"
        "  - condition: server_alarm [on] server AND host [contains] server\n"
        "    actions:\n"
        "      - raise_alarm: {target: host, name: host.from_servers, severity: CRITICAL,\n"
        "                      causing_alarm: server_alarm}\n"
    )
    result = runner.invoke(app, ["template", "validate", str(path)])
    assert result.exit_code == 1 and "a cycle of causes" in result.output
    result = runner.invoke(app, ["template", "validate", "--alone", str(path)])
    assert result.exit_code == 0, result.output


def test_template_validate_needs_a_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["template", "validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    """A service with its API on a real port (the commands talk HTTP)."""
    with live_api(tmp_path) as url:
        yield url


def test_template_commands_against_a_service(live: str, tmp_path: Path) -> None:
    api = ["--api", live]
    result = runner.invoke(app, ["template", "list", *api])
    assert result.exit_code == 0, result.output
    assert "host_down" in result.output and "built-in" in result.output
    listed = json.loads(runner.invoke(app, ["template", "list", "--json", *api]).stdout)
    assert "host_watch" not in {t["name"] for t in listed}
    result = runner.invoke(app, ["template", "show", "host_down", *api])
    assert result.exit_code == 0 and result.stdout.startswith("name: host_down\n")
    assert "host_alarm [on] host" in result.stdout  # printed as it is, not as markup

    path = tmp_path / "host_watch.yaml"
    path.write_text(HOST_WATCH)
    result = runner.invoke(app, ["template", "add", str(path), *api])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("added host_watch: 0 notifications")
    result = runner.invoke(app, ["template", "add", str(path), *api])
    assert result.exit_code == 0 and result.output.startswith("replaced host_watch")
    result = runner.invoke(app, ["template", "show", "host_watch", *api])
    assert result.stdout == HOST_WATCH

    bad = tmp_path / "bad.yaml"
    bad.write_text(HOST_WATCH.replace("alarm [on] host", "alarm [on] hots"))
    result = runner.invoke(app, ["template", "add", str(bad), *api])
    assert result.exit_code == 1
    assert "line 7: condition names 'hots', which is not an entity" in result.output

    result = runner.invoke(app, ["template", "delete", "host_down", *api])
    assert result.exit_code == 1
    assert "HTTP 409" in result.output and "built-in" in result.output
    result = runner.invoke(app, ["template", "delete", "host_watch", *api])
    assert result.exit_code == 0 and "deleted host_watch" in result.output
    result = runner.invoke(app, ["template", "show", "host_watch", *api])
    assert result.exit_code == 1 and "HTTP 404" in result.output


def test_alarms_history_and_topology_query(live: str, tmp_path: Path) -> None:
    api = ["--api", live]
    path = tmp_path / "host_watch.yaml"
    path.write_text(HOST_WATCH)
    assert runner.invoke(app, ["template", "add", str(path), *api]).exit_code == 0
    resp = httpx.put(live + "/events", json=[host_down("compute1")], headers=MONITOR)
    assert resp.status_code == 202

    deadline = time.monotonic() + 10
    while True:
        body = json.loads(runner.invoke(app, ["alarms", "--json", "--history", "5", *api]).stdout)
        if any(a["name"] == "host.watched" for a in body["alarms"]):
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    assert {"raised"} <= {r["change"] for r in body["history"]}
    assert len(body["history"]) <= 5

    result = runner.invoke(app, ["alarms", "--history", "5", *api])
    assert result.exit_code == 0, result.output
    assert "deduced by" in result.output and "host_watch" in result.output
    assert "alarm history" in result.output and "raised" in result.output
    assert "alarm history" not in runner.invoke(app, ["alarms", *api]).output

    query = '{"==": {"type": "host"}}'
    result = runner.invoke(app, ["topology", "--query", query, *api])
    assert result.exit_code == 0, result.output
    assert all(f"compute{i}" in result.output for i in (1, 2, 3))
    assert "vm1" not in result.output
    body = json.loads(runner.invoke(app, ["topology", "--json", "--query", query, *api]).stdout)
    assert {v["key"] for v in body["vertices"]} == {f"host:compute{i}" for i in (1, 2, 3)}
    result = runner.invoke(app, ["topology", "--query", '{"==": {"typ": "host"}}', *api])
    assert result.exit_code == 1 and "query.==.typ" in result.output


def test_the_api_token_comes_from_the_environment(live: str) -> None:
    """Set in OPENDOCTOR_API_TOKEN, the token is sent instead of the admin headers: the
    service here believes headers, not tokens, so a token alone is refused (401)."""
    plain = runner.invoke(app, ["alarms", "--api", live])
    assert plain.exit_code == 0, plain.output
    with_token = runner.invoke(
        app, ["alarms", "--api", live], env={"OPENDOCTOR_API_TOKEN": "tok-operator"}
    )
    assert with_token.exit_code == 1 and "401" in with_token.output


def test_audit_lists_who_changed_what(live: str, tmp_path: Path) -> None:
    api = ["--api", live]
    path = tmp_path / "host_watch.yaml"
    path.write_text(HOST_WATCH)
    assert runner.invoke(app, ["template", "add", str(path), *api]).exit_code == 0
    assert runner.invoke(app, ["template", "delete", "host_watch", *api]).exit_code == 0

    result = runner.invoke(app, ["audit", "--limit", "1", *api])
    assert result.exit_code == 0, result.output
    newest = json.loads(runner.invoke(app, ["audit", "--json", *api]).stdout)
    assert [(e["method"], e["path"], e["status"]) for e in newest] == [
        ("DELETE", "/v1/templates/host_watch", 204),
        ("POST", "/v1/templates", 201),
    ]
    assert "DELETE /v1/templates/host_watch" in result.output
    assert f"more: --marker {newest[0]['id']}" in result.output
    older = runner.invoke(app, ["audit", "--marker", str(newest[0]["id"]), *api])
    assert "POST /v1/templates" in older.output and "host_watch" in older.output
    mine = json.loads(runner.invoke(app, ["audit", "--json", "--project", "p1", *api]).stdout)
    assert mine == []
