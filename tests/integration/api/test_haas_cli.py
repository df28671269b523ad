"""`opendoctor ha` against a live API: declare a cluster, its node, service, fencing
device and policy, read its state and history, remove and delete; `--json` for scripts,
ids printed whole, and the API's refusal said as it is with a non-zero exit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opendoctor.cli.main import app
from tests.live import live_api

VM1 = "00000000-0000-0000-0000-000000000001"  # project-a's, of the in-memory VIM


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    with live_api(tmp_path) as url:
        yield url


def ha(live: str, *args: str) -> str:
    result = CliRunner().invoke(app, ["ha", *args, "--api", live])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_cluster_declared_and_read_back_through_the_cli(live: str) -> None:
    cid = ha(live, "create", "web", "--level", "application", "--project", "project-a").strip()
    assert len(cid) == 36
    node = ha(live, "add-node", cid, VM1, "--role", "active").strip()
    ha(live, "add-service", cid, "http", "--guest-name", "nginx", "--node", node)
    ha(live, "add-fencing", cid, node, "--kind", "vim")
    ha(live, "add-resource", cid, "vip", "--kind", "ip", "--property", "address=10.0.0.9",
       "--node", node)  # fmt: skip
    policy = json.loads(
        ha(live, "add-policy", cid, "fix", "--operation", "restart", "--applies-to", "service",
           "--service", "http", "--retries", "2", "--timeout", "5", "--json")
    )  # fmt: skip
    assert (policy["services"], policy["retries"], policy["timeout"]) == (["http"], 2, 5.0)
    shown = json.loads(ha(live, "show", cid, "--json"))
    assert [n["ref"] for n in shown["nodes"]] == [VM1]
    assert shown["resources"][0]["properties"] == {"address": "10.0.0.9"}
    table = ha(live, "show", cid)
    assert cid in table and node in table and "fix" in table  # ids whole in the tables
    state = json.loads(ha(live, "state", cid, "--json"))
    assert (state["state"], state["active"]) == ("ok", [VM1])
    assert json.loads(ha(live, "history", cid, "--json")) == []
    assert [c["id"] for c in json.loads(ha(live, "list", "--json"))] == [cid]
    ha(live, "remove", cid, "policies", policy["id"])
    assert json.loads(ha(live, "show", cid, "--json"))["policies"] == []
    ha(live, "delete", cid)
    assert json.loads(ha(live, "list", "--json")) == []


def test_a_refusal_is_said_and_exits_non_zero(live: str) -> None:
    cid = ha(live, "create", "web").strip()
    result = CliRunner().invoke(
        app, ["ha", "add-policy", cid, "p", "--operation", "reboot", "--api", live]
    )
    assert result.exit_code == 1
    assert "HTTP 400" in result.output and "operation" in result.output
    result = CliRunner().invoke(app, ["ha", "remove", cid, "widgets", "x", "--api", live])
    assert result.exit_code == 2


def test_the_help_explains(live: str) -> None:
    text = CliRunner().invoke(app, ["ha", "--help"]).output
    assert "switch-over" in text and "opendoctor ha create" in text
    text = CliRunner().invoke(app, ["ha", "add-policy", "--help"]).output
    assert "--domain" in text and "--retries" in text
