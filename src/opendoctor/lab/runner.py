"""Starting and stopping a lab manager: in a test (`LabRunner`) or detached (`lab up`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from opendoctor.infra.procs import die_with_parent, pid_alive, terminate
from opendoctor.lab.client import LabClient
from opendoctor.lab.spec import LabSpec
from opendoctor.lab.statefile import read_state, remove_state

LOG_FILE = "lab.log"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class LabStartError(RuntimeError):
    """The lab manager did not come up; the message carries the end of its log."""


def _manager_command(spec: LabSpec, state_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "opendoctor.lab.manager", "--state-dir", str(state_dir),
        *spec.to_args(),
    ]  # fmt: skip


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def running_state(state_dir: Path | str) -> dict[str, Any] | None:
    """`lab.json` of the lab running from `state_dir`, or None (a stale file is removed)."""
    state_dir = Path(state_dir)
    data = read_state(state_dir)
    if data is None:
        return None
    pid = data.get("pid")
    if isinstance(pid, int) and pid_alive(pid):
        return data
    remove_state(state_dir)
    return None


def _prepare(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    data = running_state(state_dir)
    if data is not None:
        raise LabStartError(f"a lab is already running from {state_dir} (pid {data['pid']})")


class LabRunner:
    """`async with LabRunner(spec, state_dir) as lab:` runs a lab manager for the block.

    `lab.url`, `lab.pid` and `lab.client` (a `LabClient`) are set inside the block.
    """

    def __init__(
        self,
        spec: LabSpec | None = None,
        state_dir: Path | str | None = None,
        *,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.spec = spec or LabSpec()
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="od-lab-"))
        self.start_timeout = start_timeout
        self.url = ""
        self.pid = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._client: LabClient | None = None

    @property
    def client(self) -> LabClient:
        if self._client is None:
            raise RuntimeError("the lab is not running")
        return self._client

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_FILE

    async def start(self) -> None:
        _prepare(self.state_dir)
        with self.log_path.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *_manager_command(self.spec, self.state_dir),
                env=os.environ | self.spec.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Should the test process die, the lab goes with it.
                preexec_fn=die_with_parent(),
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            data = read_state(self.state_dir)
            if data is not None and data.get("pid") == self._proc.pid:
                break
            if self._proc.returncode is not None:
                raise LabStartError(
                    f"lab manager exited with code {self._proc.returncode}:\n"
                    + _log_tail(self.log_path)
                )
            if time.monotonic() >= deadline:
                await self.stop()
                raise LabStartError(
                    f"lab not ready within {self.start_timeout} s:\n" + _log_tail(self.log_path)
                )
            await asyncio.sleep(0.02)
        self.url = data["url"]
        self.pid = self._proc.pid
        self._client = LabClient(self.url)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            # Its hosts die with it (parent-death signal), so a hard kill leaves nothing behind.
            proc.kill()
            await proc.wait()

    async def __aenter__(self) -> LabRunner:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def start_detached(
    spec: LabSpec, state_dir: Path | str, timeout: float = START_TIMEOUT
) -> dict[str, Any]:
    """Start a lab manager that outlives the caller; returns its `lab.json` once ready.

    Its output goes to `state_dir/lab.log`.
    """
    state_dir = Path(state_dir)
    _prepare(state_dir)
    log_path = state_dir / LOG_FILE
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            _manager_command(spec, state_dir),
            env=os.environ | spec.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # a daemon: no terminal signals, no parent to die with
        )
    deadline = time.monotonic() + timeout
    while True:
        data = read_state(state_dir)
        if data is not None and data.get("pid") == proc.pid:
            return data
        code = proc.poll()
        if code is not None:
            raise LabStartError(f"lab manager exited with code {code}:\n{_log_tail(log_path)}")
        if time.monotonic() >= deadline:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
            proc.kill()
            raise LabStartError(f"lab not ready within {timeout} s:\n{_log_tail(log_path)}")
        time.sleep(0.05)


def stop(state_dir: Path | str, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the lab running from `state_dir`; False if none was running."""
    state_dir = Path(state_dir)
    data = running_state(state_dir)
    if data is None:
        return False
    terminate([int(data["pid"])], timeout)
    remove_state(state_dir)
    return True
