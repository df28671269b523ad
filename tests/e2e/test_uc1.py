"""UC1 with every part a real process: lab hosts and VMs, service, monitor, consumers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from opendoctor.infra.procs import ChildProcess
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.demo import fail_and_recover, restore
from opendoctor.tools.stack import running_stack

SPEC = LabSpec(hosts=3, vms=6, projects=["project-a", "project-b"], ip_prefix="127.62")


async def test_host_failure_with_a_separate_monitor_process(tmp_path: Path) -> None:
    env = {"OPENDOCTOR_MONITOR__ENABLED": "false"}
    async with running_stack(SPEC, tmp_path, env) as s:
        monitor = ChildProcess.python(
            "monitor",
            "opendoctor",
            ["monitor", "--api", s.api],
            tmp_path,
            {
                "OPENDOCTOR_VIM__LAB_URL": s.lab.url,
                "OPENDOCTOR_STATE_DIR": str(tmp_path / "m"),
                **s.monitor_env(),
            },
        )
        async with monitor:
            alarms = await s.register_alarms()
            assert len(alarms) == 6
            story = await fail_and_recover(s, "compute2")

            victims = {v["name"] for v in story["servers"]}
            assert victims == {"vm2", "vm5"}
            assert story["not_notified"] == []
            # Each owner heard through its own consumer, about its own VM.
            for notice in story["notifications"]:
                assert notice["state"] == "error" and notice["host"] == "compute2"
                owner = next(v for v in story["servers"] if v["id"] == notice["instance_id"])
                assert notice["project"] == owner["project_id"]
            assert {"T00", "T01", "T02", "T03", "T04", "T09", "T11"} <= set(story["trace"])
            assert story["trace"]["T00"] < story["trace"]["T01"] < story["trace"]["T09"]
            # The VIM (the lab) was told: host forced down; the VMs run elsewhere again.
            hosts = {h.name: h for h in await s.lab.client.hosts()}
            assert hosts["compute2"].forced_down
            servers = {v.name: v for v in await s.lab.client.servers()}
            for name in victims:
                assert servers[name].host != "compute2"
                assert servers[name].status == "ACTIVE"
                assert story["serving_after"][name] == f"Served by {name}"

            # The rules deduced an alarm on each victim, caused by the host's. Once the
            # victims were evacuated they were no longer on the failed host, so the rule
            # stopped holding and its alarms were undone: only the host's stays.
            alarms = await cli_json(s.api, "alarms", "--history", "50")
            assert alarms["counts"] == {"CRITICAL": 1}
            assert [a["id"] for a in alarms["alarms"]] == [story["fault_id"]]
            host_alarm = f"alarm:{story['fault_id']}"
            deduced = {
                (h["on"], h["change"], h["name"])
                for h in alarms["history"]
                if h["caused_by"] == host_alarm
            }
            assert deduced == {
                (f"server:{v['id']}", change, "instance.host_down")
                for v in story["servers"]
                for change in ("raised", "cleared")
            }
            why = await cli_json(s.api, "rca", story["fault_id"])
            assert why["root_cause"]["on"]["key"] == "host:compute2"
            assert why["effects"] == []

            back = await restore(s, "compute2", story["fault_id"])
            assert back["state"]["state"] == "up"
            hosts = {h.name: h for h in await s.lab.client.hosts()}
            assert not hosts["compute2"].forced_down

        # The operator's view of the same: `opendoctor topology` against the live API.
        shown = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "opendoctor",
            "topology",
            "--api",
            s.api,
            "--json",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await shown.communicate()
        assert shown.returncode == 0
        graph = json.loads(out)
        under = {e["target"] for e in graph["edges"] if e["source"] == "host:compute2"}
        assert not under & {f"server:{v['id']}" for v in story["servers"]}


async def cli_json(api: str, *args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "opendoctor",
        *args,
        "--api",
        api,
        "--json",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return json.loads(out)


def test_the_demo_command_passes_and_reports_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "opendoctor", "demo", "uc1", "--json", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    result = result["uc1"]
    fault = result["fault"]
    assert len(fault["notifications"]) == len(fault["servers"]) == 2
    assert fault["totals"]["detection_to_last_notification"] < 1.0
    assert all(item["result"] == "ok" for item in fault["recovery"])
    assert result["restore"]["state"]["state"] == "up"
