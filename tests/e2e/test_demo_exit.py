"""`opendoctor demo uc1` fails, and says whom it missed, when an owner is not told."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from tests.conftest import eventually

KILLED = "project-a"


def pid_by_command_line(needle: str) -> int | None:
    """The process whose command line contains `needle` (None: there is none)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle.encode() in argv:
            return int(entry.name)
    return None


async def test_the_demo_exits_1_naming_the_servers_whose_owner_was_missed(
    tmp_path: Path,
) -> None:
    """A user whose VNF manager (consumer) died sees the demo fail with exit code 1 and
    `not_notified` naming exactly that project's servers on the failed host."""
    demo = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "opendoctor", "demo", "uc1", "--json", "--workdir", str(tmp_path)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output = asyncio.ensure_future(demo.communicate())
    try:
        ready = tmp_path / "uc1" / f"consumer-{KILLED}.ready"
        await eventually(
            lambda: ready.exists() or output.done(), timeout=120, what="the consumer to start"
        )
        assert not output.done(), "the demo ended before its consumers were up"
        pid = await eventually(
            lambda: pid_by_command_line(str(ready)), what=f"the pid of {KILLED}'s consumer"
        )
        os.kill(pid, signal.SIGKILL)
        out, err = await asyncio.wait_for(output, 180)
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
    text = out.decode() + err.decode()
    assert demo.returncode == 1, text
    assert "Traceback" not in text
    result = json.loads(out)
    assert result["ok"] is False
    story = result["uc1"]["fault"]
    assert result["uc1"]["ok"] is False
    missed = sorted(v["name"] for v in story["servers"] if v["project_id"] == KILLED)
    told = sorted(v["name"] for v in story["servers"] if v["project_id"] != KILLED)
    # The failed host runs servers of both projects: the other owner is a real control.
    assert missed and told, story["servers"]
    assert sorted(story["not_notified"]) == missed
    assert sorted(n["alarm_name"].removeprefix("vm-failure-") for n in story["notifications"]) == (
        told
    )
    assert story["consumers_not_answering"] == [KILLED]
    assert any(", ".join(missed) in p for p in result["uc1"]["problems"])
