"""Child processes that announce readiness by writing a file (consumers, the service).

Used by the demo, the benchmarks and the end-to-end tests, which all run the real
programs as separate processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the pre-exec hook must not load libraries in the child.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent() -> Callable[[], None]:
    """A pre-exec hook that makes the child get SIGKILL when the forking parent dies
    (the forking thread, strictly: fork from the one that lives as long as the parent).

    This is how a power loss of a lab host also takes its VMs down, and how a crashed
    manager, demo or benchmark leaves no process behind.
    """
    parent = os.getpid()

    def hook() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl; then nobody would tell us.
        if os.getppid() != parent:
            os._exit(1)

    return hook


def pid_alive(pid: int) -> bool:
    """Whether a process exists (a zombie counts as gone when /proc says so)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            # Field 3 is the state; the command name before it may contain spaces.
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def terminate(pids: list[int], timeout: float, group: bool = False) -> None:
    """SIGTERM each process (its whole process group with `group`), in this order; wait up
    to `timeout` seconds for all to go, then SIGKILL what is left."""
    send = os.killpg if group else os.kill
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            send(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                send(pid, signal.SIGKILL)


class ChildFailed(RuntimeError):
    pass


class ChildProcess:
    def __init__(
        self,
        name: str,
        args: list[str],
        ready_file: Path | None,
        log_file: Path,
        env: dict[str, str] | None = None,
        tied: bool = False,
    ) -> None:
        self.name = name
        self.args = args
        self.ready_file = ready_file
        self.log_file = log_file
        self.env = env
        # Tied: SIGKILLed by the kernel if this process dies without stopping it (a
        # demo or benchmark killed half way), rather than left running against a shared
        # cloud. Not for `opendoctor cluster up`, whose members outlive the command.
        self.tied = tied
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = ""

    @classmethod
    def python(
        cls,
        name: str,
        module: str,
        args: list[str],
        workdir: Path,
        env: dict[str, str] | None = None,
        tied: bool = False,
    ) -> ChildProcess:
        ready = workdir / f"{name}.ready"
        return cls(
            name,
            [sys.executable, "-m", module, *args, "--ready-file", str(ready)],
            ready,
            workdir / f"{name}.log",
            env,
            tied,
        )

    async def start(
        self, timeout: float = 60.0, ready: Callable[[], Awaitable[bool]] | None = None
    ) -> str:
        """Start it and wait until it is ready: its ready file written (what it wrote
        there is returned), or, for a program that writes none (another project's
        daemon), until `ready()` holds."""
        if ready is None:
            if self.ready_file is None:
                raise ValueError(f"{self.name}: no ready file, and no readiness check given")
            self.ready_file.unlink(missing_ok=True)
            ready = self._ready_file_written
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.env or {})
        # A tied child is forked from the event loop's thread: the kernel's death signal
        # follows the forking thread, and a pool's thread may go before the process.
        self.proc = self._spawn(env) if self.tied else await asyncio.to_thread(self._spawn, env)
        deadline = time.monotonic() + timeout
        while not await ready():
            if self.proc.poll() is not None:
                raise ChildFailed(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                await self.stop()
                raise ChildFailed(f"{self.name} not ready after {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.02)
        if self.ready_file is not None and self.ready_file.exists():
            self.ready = self.ready_file.read_text().strip()
        return self.ready

    async def _ready_file_written(self) -> bool:
        return self.ready_file is not None and self.ready_file.exists()

    def _spawn(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        # Own session: stop() and kill() reach the child's children too.
        with self.log_file.open("ab") as log:
            return subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent() if self.tied else None,
            )

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    async def __aenter__(self) -> ChildProcess:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def announce_ready(ready_file: Path | None, text: str) -> None:
    """Tell a parent that started us with --ready-file that we serve (at `text`, a URL).

    Written to a temporary name and renamed, so a reader never sees half a file.
    """
    if ready_file is None:
        return
    tmp = ready_file.with_name(ready_file.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, ready_file)


async def until_signalled() -> None:
    """Return when the process gets SIGTERM or SIGINT (a clean stop, not a traceback)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, for a process that must be told its port (or
    be allowed to reach one) before it starts."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
