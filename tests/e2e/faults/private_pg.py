"""A PostgreSQL server of one test's own, for the tests that stop, crash and restart it.

The machine's shared server (127.0.0.1:5432) serves every other test running at the same
time; stopping it would fail them. `private_postgres()` instead creates a cluster with
`initdb` in a temporary directory and runs it on a free loopback port, with the binaries
of the installed PostgreSQL (`/usr/lib/postgresql/<version>/bin`). PostgreSQL refuses to
run as root: under root every command runs as the `postgres` user, who owns the
directory. Authentication is `trust` (user `postgres`, no password). Nothing is synced to
disk (`fsync`, full page writes off): the operating system never crashes under these
tests, so what the server wrote survives its own crash anyway, and it starts at once.
What the module needs and does not find skips the test, or fails it in CI
(`tests.servers.need`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import asyncpg

from tests.servers import need
from tests.tcpproxy import free_port

INSTALLED = Path("/usr/lib/postgresql")
RUN_AS = "postgres"
# Seconds for initdb, a start or a stop: each takes well under one on an idle machine.
DEADLINE = 60.0
# What makes a throwaway server quick to create and start. Not `synchronous_commit=off`:
# an immediate stop would lose the commits its WAL writer had not written out yet, and
# the tests would see a database forget what it had acknowledged.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "100",
    "log_min_messages": "warning",
}

StopMode = Literal["fast", "immediate"]


class PostgresError(RuntimeError):
    """A command of the private server failed; the message carries its output."""


def bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (skips, or fails in CI, without one)."""
    try:
        versions = sorted(
            (p for p in INSTALLED.iterdir() if (p / "bin" / "initdb").exists()),
            key=lambda p: [int(x) if x.isdigit() else 0 for x in p.name.split(".")],
        )
    except OSError as exc:
        versions = []
        reason = f"{type(exc).__name__}: {exc}"
    else:
        reason = "no version there has bin/initdb"
    if not versions:
        need(f"a private PostgreSQL needs the server binaries under {INSTALLED}: {reason}")
    return versions[-1] / "bin"


def run_as() -> list[str]:
    """The prefix that runs a command as an unprivileged user (nothing if we are one)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        need(f"a private PostgreSQL run by root needs a {RUN_AS!r} user to run it as")
    runuser = shutil.which("runuser")
    if runuser is None:
        need(f"a private PostgreSQL run by root needs runuser to run it as {RUN_AS!r}")
    return [str(runuser), "-u", RUN_AS, "--"]


class PrivatePostgres:
    """One cluster in `root`, served on 127.0.0.1:`port` while started."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.bin = bin_dir()
        self.prefix = run_as()
        self.data = root / "data"
        self.log = root / "server.log"

    def url(self, database: str = "postgres") -> str:
        """The URL asyncpg and psql take."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def service_url(self, database: str) -> str:
        """The URL opendoctor takes (`OPENDOCTOR_DATABASE_URL`)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    async def _run(self, tool: str, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix,
            str(self.bin / tool),
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Not the test's directory: the postgres user may not be allowed into it.
            cwd=self.root,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), DEADLINE)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise PostgresError(f"{tool} {' '.join(args)}: no answer in {DEADLINE:.0f}s") from None
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise PostgresError(
                f"{tool} {' '.join(args)}: exit {proc.returncode}\n{text}\n{self.server_log()}"
            )
        return text

    def server_log(self) -> str:
        try:
            return "server log:\n" + "\n".join(
                self.log.read_text(errors="replace").splitlines()[-20:]
            )
        except OSError:
            return "no server log"

    async def init(self) -> None:
        """Create the cluster: superuser `postgres`, trust authentication, UTF-8."""
        await self._run(
            "initdb", "--pgdata", str(self.data), "--username", "postgres", "--auth", "trust",
            "--encoding", "UTF8", "--locale", "C", "--no-sync", "--no-instructions",
        )  # fmt: skip

    async def start(self) -> None:
        """Start the server; returns once it accepts connections."""
        options = " ".join(
            [f"-p {self.port}", f"-k {self.root}", *(f"-c {k}={v}" for k, v in SETTINGS.items())]
        )
        await self._run(
            "pg_ctl", "start", "--pgdata", str(self.data), "--log", str(self.log),
            "--options", options, "--wait", "--timeout", str(int(DEADLINE)),
        )  # fmt: skip

    async def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server; returns once it is gone. `fast` ends the sessions and shuts
        down cleanly; `immediate` is a crash (every process quits at once, no checkpoint:
        the next start recovers from the write-ahead log)."""
        await self._run(
            "pg_ctl", "stop", "--pgdata", str(self.data), "--mode", mode,
            "--wait", "--timeout", str(int(DEADLINE)),
        )  # fmt: skip

    async def running(self) -> bool:
        """Whether the server process is up (whatever it answers)."""
        proc = await asyncio.create_subprocess_exec(
            *self.prefix,
            str(self.bin / "pg_ctl"),
            "status",
            "--pgdata",
            str(self.data),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
        )
        return await proc.wait() == 0

    async def answers(self) -> bool:
        """Whether a session can be opened now."""
        try:
            conn = await asyncpg.connect(self.url(), timeout=2)
        except (OSError, TimeoutError, asyncpg.PostgresError):
            # Refused while down; "the database system is starting up" right after.
            return False
        await conn.close()
        return True

    async def create_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.url(), timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A new cluster, started; afterwards stopped (however the test left it) and removed."""
    prefix = run_as()
    root = Path(tempfile.mkdtemp(prefix="opendoctor-pg-"))
    try:
        if prefix:
            owner = pwd.getpwnam(RUN_AS)
            os.chown(root, owner.pw_uid, owner.pw_gid)
        server = PrivatePostgres(root, free_port())
        await server.init()
        try:
            for attempt in range(3):
                try:
                    await server.start()
                    break
                except PostgresError:
                    # The free port may have been taken since it was picked: pick another.
                    if attempt == 2:
                        raise
                    server.port = free_port()
            yield server
        finally:
            if await server.running():
                await server.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)
