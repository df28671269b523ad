"""A RabbitMQ node of the test's own, which the test may kill and start again.

The machine's shared broker (127.0.0.1:5672) serves other tests at the same time, so a
test that kills a broker must kill its own. This one runs `rabbitmq-server` under a
node name, an AMQP port and a distribution port of its own, on loopback, with its data,
logs, pid file, settings files and Erlang cookie in a temporary directory, and no
plugins (the management plugin's port would clash with the shared broker's). Killing it
SIGKILLs its Erlang VM, as a crash or the OOM killer would; starting it again reuses
the same data directory, so what the node had persisted comes back.

Use the `private_rabbit` fixture (import it into the test module). Without
`rabbitmq-server` on PATH the test is skipped locally and fails in CI (`tests.servers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from opendoctor.infra.amqp import AmqpError, Broker
from tests.servers import need
from tests.tcpproxy import free_port

# Boot takes a few seconds on an idle machine; on a loaded one, and after a crash (the
# node recovers its queues), much longer.
BOOT_TIMEOUT = 120.0


class RabbitError(RuntimeError):
    pass


def server_script() -> str | None:
    """The `rabbitmq-server` script itself. Distributions put a wrapper on PATH that
    switches to the rabbitmq user and the system's settings (it would drop ours): the
    real script sits beside the wrapper's target."""
    found = shutil.which("rabbitmq-server")
    if found is None:
        return None
    real = Path(os.path.realpath(found))
    script = real if real.name == "rabbitmq-server" else real.with_name("rabbitmq-server")
    return str(script) if script.is_file() else found


class PrivateRabbit:
    """One node: `start()`, `kill()` (SIGKILL of its VM), `start()` again, `remove()`."""

    def __init__(self, directory: Path, script: str) -> None:
        self.directory = directory
        self.script = script
        tag = uuid.uuid4().hex[:10]
        self.node = f"odtest-{tag}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def log(self) -> Path:
        return self.directory / "server.out"

    def _env(self) -> dict[str, str]:
        d = self.directory
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k not in ("CONF_ENV_FILE", "NODENAME")
        }
        return inherited | {
            # The cookie the VM creates lands in $HOME: ours, not the shared node's.
            "HOME": str(d),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "node.pid"),
            # The system's files name the shared node and its listener: not read.
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins-expand"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _prepare(self) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq-env.conf").write_text("")
        # A small test machine's disk must not trip the free-space alarm (it blocks
        # publishers, which would look like the fault under test).
        (d / "rabbitmq.conf").write_text("disk_free_limit.absolute = 1MB\n")
        (d / "enabled_plugins").write_text("[].\n")

    async def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Start the node (again) and wait until it accepts AMQP connections."""
        if self.proc is not None and self.proc.returncode is None:
            raise RabbitError(f"{self.node} is already running")
        if self.starts == 0:
            self._prepare()
        self.starts += 1
        (self.directory / "node.pid").unlink(missing_ok=True)
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                self.script,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=self._env(),
                cwd=self.directory,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not await self._accepts():
            if self.proc.returncode is not None:
                raise RabbitError(f"{self.node} exited ({self.proc.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RabbitError(f"{self.node} not accepting AMQP in {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.2)

    async def _accepts(self) -> bool:
        """A full AMQP handshake: the port opens before the node can serve."""
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False  # not listening yet: spare the client's reconnection noise
        writer.close()
        broker = Broker(self.url, name="opendoctor-tests-private-rabbit", timeout=2.0)
        try:
            await broker.connect()
        except AmqpError:
            return False
        finally:
            await broker.close()
        return True

    def vm_pid(self) -> int:
        """The Erlang VM's process id, as the node wrote it."""
        try:
            return int((self.directory / "node.pid").read_text().strip())
        except (OSError, ValueError) as exc:
            raise RabbitError(f"{self.node} wrote no pid file: {exc}") from exc

    async def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL the node's Erlang VM: no shutdown, no flush, its clients cut off."""
        assert self.proc is not None
        pid = self.vm_pid()
        # Only a process of the node's own session: never another broker by a stale file.
        if os.getpgid(pid) != self.proc.pid:
            raise RabbitError(f"pid {pid} of {self.node}'s pid file is not the node's VM")
        os.kill(pid, signal.SIGKILL)
        # The script in front of the VM exits once the VM is gone.
        await asyncio.wait_for(self.proc.wait(), timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def remove(self) -> None:
        """Stop whatever is left of the node (its whole session) and delete its files."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 30.0)
        await asyncio.to_thread(shutil.rmtree, self.directory, True)

    def tail(self, lines: int = 30) -> str:
        text = []
        for path in [self.log, *sorted((self.directory / "log").glob("*.log"))]:
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)


async def rabbitmqctl(*args: str, node: PrivateRabbit | None = None) -> Any:
    """`rabbitmqctl ARGS` as parsed JSON, of a private node or (without one) of the
    machine's broker; only ever for looking (list_*), never for stopping anything."""
    found = shutil.which("rabbitmqctl")
    if found is None:
        need("rabbitmqctl is not on PATH: the test cannot ask the broker what it holds")
        raise AssertionError("not reached")
    command, env = [found], None
    if node is not None:
        # The real script (not the distribution's wrapper), with the node's cookie.
        command = [str(Path(node.script).with_name("rabbitmqctl")), "-n", node.node]
        env = node._env()
    proc = await asyncio.create_subprocess_exec(
        *command,
        *args,
        "-q",
        "--formatter",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)}: {err.decode()}{out.decode()}"
    return json.loads(out)


async def unacked_by_process(node: PrivateRabbit | None = None) -> dict[int, int]:
    """Process id -> messages delivered to it and not acknowledged yet, as the broker
    sees them: opendoctor names each connection with its process id (`opendoctor.infra.amqp`)."""
    connections, channels = await asyncio.gather(
        rabbitmqctl("list_connections", "pid", "client_properties", node=node),
        rabbitmqctl("list_channels", "connection", "messages_unacknowledged", node=node),
    )
    owner: dict[str, int] = {}
    for c in connections:
        props = {p[0]: p[2] for p in c["client_properties"]}
        name = str(props.get("connection_name", ""))
        _, sep, pid = name.rpartition(" pid ")
        if sep and pid.isdigit():
            owner[c["pid"]] = int(pid)
    out: dict[int, int] = {}
    for ch in channels:
        pid = owner.get(ch["connection"])
        if pid is not None:
            out[pid] = out.get(pid, 0) + int(ch["messages_unacknowledged"])
    return out


async def queued(prefix: str, node: PrivateRabbit | None = None) -> dict[str, int]:
    """Queue name -> messages in it (ready or delivered and unacknowledged), for the
    queues whose names start with `prefix`."""
    rows = await rabbitmqctl("list_queues", "name", "messages", node=node)
    return {r["name"]: int(r["messages"]) for r in rows if r["name"].startswith(prefix)}


@pytest.fixture
async def private_rabbit(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrivateRabbit]:
    """A running RabbitMQ node of this test's own (see the module's docstring)."""
    script = server_script()
    if script is None:
        need("rabbitmq-server is not on PATH: the test cannot run a RabbitMQ node of its own")
        raise AssertionError("not reached")
    node = PrivateRabbit(tmp_path_factory.mktemp("rabbit"), script)
    try:
        await node.start()
        yield node
    finally:
        await node.remove()
