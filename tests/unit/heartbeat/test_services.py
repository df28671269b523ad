"""Per-service health and restarts: agents (in-process and as the real command) with a
real supervisor on real Unix sockets; the test plays the service end of the host link."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from opendoctor.heartbeat.agent import GuestAgent
from opendoctor.heartbeat.cli import main
from opendoctor.heartbeat.services import Service
from tests.conftest import eventually

from .conftest import Agents, Host, of_type
from .conftest import registered_agent as running


class Flags:
    """A guest's services: health flags a test flips, restarts that raise them again."""

    def __init__(self, *names: str) -> None:
        self.healthy = dict.fromkeys(names, True)
        self.restarted: list[str] = []

    def services(self, restartable: bool = True) -> list[Service]:
        return [
            Service(n, self._check(n), self._restart(n) if restartable else None)
            for n in self.healthy
        ]

    def _check(self, name: str) -> Any:
        async def check() -> tuple[bool, str | None]:
            return self.healthy[name], None if self.healthy[name] else f"{name} is down"

        return check

    def _restart(self, name: str) -> Any:
        async def restart() -> tuple[bool, str | None]:
            self.restarted.append(name)
            self.healthy[name] = True
            return True, None

        return restart


async def test_an_unhealthy_service_makes_the_vm_unhealthy_and_a_restart_heals_it(
    host: Host,
) -> None:
    ups: list[dict[str, Any]] = []
    restarted: list[tuple[str, str, bool]] = []
    host.sup.relay.uplink = ups.append
    host.sup.relay._restarted = lambda *a: restarted.append(a)
    await host.add("vm1")
    flags = Flags("web", "db")
    async with running(GuestAgent(host.sock("vm1"), "vm1", services=flags.services())):
        first = await eventually(lambda: of_type(ups, "service-state"), what="service states")
        assert first[0]["services"] == [
            {"name": "web", "healthy": True, "reason": None},
            {"name": "db", "healthy": True, "reason": None},
        ]
        flags.healthy["db"] = False
        await eventually(lambda: host.of("vm1") == [("unhealthy", "down")], what="fault")
        report = host.reports[0]["details"]["reason"]
        assert report == "unhealthy service: db: db is down"
        states = of_type(ups, "service-state")
        assert states[-1]["services"][1] == {"name": "db", "healthy": False, "reason": "db is down"}
        assert host.sup.relay.services("vm1")[1]["healthy"] is False

        host.sup.deliver(
            {
                "type": "restart-service",
                "to": ["vm1"],
                "service": "db",
                "request_id": "rq-1",
                "timeout": 5,
            }
        )
        result = await eventually(lambda: of_type(ups, "restart-result"), what="restart result")
        assert result == [
            {"type": "restart-result", "request_id": "rq-1", "ok": True, "reason": None}
        ]
        assert flags.restarted == ["db"] and restarted == [("vm1", "db", True)]
        assert host.sup.relay.restarts("vm1") == {"db": 1}
        await eventually(lambda: host.of("vm1")[-1] == ("unhealthy", "up"), what="cleared")

        # A service without a restart command, or no such service: answered, not hung.
        host.sup.deliver(
            {
                "type": "restart-service",
                "to": ["vm1"],
                "service": "nope",
                "request_id": "rq-2",
                "timeout": 5,
            }
        )
        await eventually(lambda: len(of_type(ups, "restart-result")) == 2, what="refusal")
        assert of_type(ups, "restart-result")[1]["ok"] is False
        assert "no service named 'nope'" in of_type(ups, "restart-result")[1]["reason"]


async def test_restart_of_an_absent_agent_fails_at_once(host: Host) -> None:
    ups: list[dict[str, Any]] = []
    host.sup.relay.uplink = ups.append
    await host.add("vm1")
    host.sup.deliver(
        {"type": "restart-service", "to": ["vm1"], "service": "db", "request_id": "r", "timeout": 1}
    )
    assert ups == [
        {
            "type": "restart-result",
            "request_id": "r",
            "ok": False,
            "reason": "the guest agent is not connected",
        }
    ]


def test_services_need_distinct_valid_names() -> None:
    async def ok() -> tuple[bool, str | None]:
        return True, None

    with pytest.raises(ValueError, match="service name"):
        Service("a b", ok)
    with pytest.raises(ValueError, match="of its own"):
        GuestAgent("x", "vm", services=[Service("a", ok), Service("a", ok)])


async def test_the_agent_command_runs_service_checks_and_restarts(
    host: Host, agents: Agents, tmp_path: Path
) -> None:
    """`--service` and `--service-restart` as shell commands, in a real agent process."""
    ups: list[dict[str, Any]] = []
    host.sup.relay.uplink = ups.append
    await host.add("vm1")
    marker = tmp_path / "db.up"
    app = str(tmp_path / "vm1.app")
    await agents.start(
        host.sock("vm1"),
        "vm1",
        "--service",
        "web=true",
        "--service",
        f"db=test -f {marker} || (echo 'db: no marker' >&2; exit 3)",
        "--service-restart",
        f"db=touch {marker}",
        "--app-socket",
        app,
    )
    await eventually(lambda: host.of("vm1") == [("unhealthy", "down")], what="db unhealthy")
    reason = "unhealthy service: db: health command failed (exit code 3): db: no marker"
    assert host.reports[0]["details"]["reason"] == reason
    host.sup.deliver(
        {
            "type": "restart-service",
            "to": ["vm1"],
            "service": "db",
            "request_id": "r1",
            "timeout": 5,
        }
    )
    result = await eventually(lambda: of_type(ups, "restart-result"), what="restart result")
    assert result[0]["ok"] is True and marker.exists()
    await eventually(lambda: host.of("vm1")[-1] == ("unhealthy", "up"), what="db healthy")
    assert stat.S_IMODE(os.stat(app).st_mode) == 0o600


def test_the_agent_command_refuses_bad_services(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--channel", "/nowhere", "--instance-id", "x"]
    for extra, problem in [
        (["--service", "no-command"], "NAME=COMMAND"),
        (["--service", "a b=true"], "service name"),
        (["--service", "a=true", "--service", "a=false"], "its own name"),
        (["--service-restart", "a=true"], "without --service: a"),
    ]:
        with pytest.raises(SystemExit):
            main([*base, *extra])
        assert problem in capsys.readouterr().err
