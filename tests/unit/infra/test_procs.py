"""A tied child process goes when the process that started it dies without stopping it
(a demo or benchmark killed half way), instead of running on against a shared cloud; an
untied one (a member of `opendoctor cluster up`) outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opendoctor.infra.procs import pid_alive

# The parent: starts a child that only waits, prints its pid, then waits to be killed.
PARENT = """
import asyncio, sys
from pathlib import Path
from opendoctor.infra.procs import ChildProcess

async def main() -> None:
    workdir = Path(sys.argv[1])
    ready = workdir / "child.ready"
    code = f"import time, pathlib; pathlib.Path({str(ready)!r}).write_text('up'); time.sleep(600)"
    child = ChildProcess("child", [sys.executable, "-c", code], ready, workdir / "child.log",
                         tied=sys.argv[2] == "tied")
    await child.start()
    print(child.proc.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("tied", [True, False])
def test_a_tied_child_dies_with_its_parent(tmp_path: Path, tied: bool) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), "tied" if tied else "free"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert pid_alive(child)
        parent.kill()
        parent.wait()
        if tied:
            assert gone(child, 5), "the tied child outlived its parent"
        else:
            # Reparented, still running: its parent's death is not its own.
            assert pid_alive(child) and os.getpgid(child) == child
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)
