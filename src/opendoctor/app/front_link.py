"""The HTTP front in a process of its own: the service's side (the child's is
app/front_process.py).

The service binds the listening socket and passes it down, serves the requests the front
does not serve itself (`infra.asgi_pipe`, on a Unix socket in a directory only this user
may open), and answers the front's control channel: events it accepted go to the bus
and the journal (`Intake.taken_in`), questions about names are answered from the
topology. A front that dies is started again on the same socket: clients that connect
meanwhile wait in its backlog, and the events it had kept in the spool without handing
them over are taken from there (`Intake.take_missed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretBytes, SecretStr

from opendoctor.api.events import known_names
from opendoctor.api.facade import Facade
from opendoctor.app.intake import Intake
from opendoctor.core.model import Event
from opendoctor.core.settings import Settings
from opendoctor.infra import asgi_pipe
from opendoctor.infra.loops import Asgi
from opendoctor.infra.procs import die_with_parent

log = logging.getLogger(__name__)

READY_WITHIN = 30.0  # seconds a new front process has to start serving
STOP_WITHIN = 15.0  # seconds it has to end its requests once told to stop
RESTART_AFTER = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds before each restart in a row


# A front process started, its settings sent, not yet told to serve.
_Pending = tuple[asyncio.subprocess.Process, asyncio.StreamReader, asyncio.StreamWriter]


class FrontFailed(RuntimeError):
    """The front process did not start serving."""


def revealed(settings: Settings) -> dict[str, Any]:
    """The settings as JSON values, secrets included: for the control channel only."""

    def default(value: Any) -> Any:
        if isinstance(value, SecretStr | SecretBytes):
            secret = value.get_secret_value()
            return secret.decode() if isinstance(secret, bytes) else secret
        if isinstance(value, set | frozenset | tuple):
            return list(value)
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"{type(value).__name__} in the settings")

    data: dict[str, Any] = orjson.loads(orjson.dumps(settings.model_dump(), default=default))
    return data


class FrontProcess:
    """Starts the front process, keeps it running, and stops it."""

    def __init__(
        self,
        app: Asgi,
        settings: Settings,
        facade: Facade,
        intake: Intake,
        listening: socket.socket,
    ) -> None:
        self.app = app
        self.settings = settings
        self.facade = facade
        self.intake = intake
        self.listening = listening
        self.restarts = 0
        self._dir = Path(tempfile.mkdtemp(prefix="opendoctor-front-"))  # mode 0700
        self._pipe_path = str(self._dir / "pipe")
        self._pipe: asyncio.Server | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None
        self._answering: asyncio.Task[None] | None = None
        self._pending: _Pending | None = None

    @property
    def pid(self) -> int | None:
        """The front process's, while one runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def spawn(self) -> None:
        """Start the front process and wait until it is ready to serve (its imports take a
        second or more); it serves once `start` says so. Before the service starts: the
        service's work begins at once (a maintenance session taken up sends notices, and
        the owners answer through the API), so the API must not lag it by that long."""
        self._pending = await self._spawn()

    async def start(self) -> None:
        """Serve the pipe and let the front serve; raises `FrontFailed` if it does not."""
        self._pipe = await asgi_pipe.serve(self._pipe_path, self.app)
        pending = self._pending or await self._spawn()
        self._pending = None
        await self._go(*pending)
        self._watch = asyncio.create_task(self._keep_running(), name="front:watch")

    async def _spawn(self) -> _Pending:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "opendoctor.app.front_process",
                "--control-fd",
                str(theirs.fileno()),
                "--listen-fd",
                str(self.listening.fileno()),
                "--pipe",
                self._pipe_path,
                pass_fds=(theirs.fileno(), self.listening.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=die_with_parent(),
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        # Without a spool (`Intake.direct`), the front writes the journal and publishes.
        spool = self.intake.events.spool
        writer.write(
            asgi_pipe.encode(
                {
                    "type": "settings",
                    "settings": revealed(self.settings),
                    "spool": spool.path if spool is not None else None,
                }
            )
        )
        await self._expect("loaded", proc, reader, writer)
        return proc, reader, writer

    async def _expect(
        self,
        kind: str,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """The front's next frame is `kind`, or it is killed and `FrontFailed` raised."""
        try:
            first = await asyncio.wait_for(asgi_pipe.read(reader), READY_WITHIN)
        except (TimeoutError, asgi_pipe.PipeError, ConnectionError):
            first = None
        if first is None or first["type"] != kind:
            code = await _abandon(proc, writer)
            raise FrontFailed(f"the front process sent no {kind!r} (exit status {code})")

    async def _go(
        self,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        writer.write(asgi_pipe.encode({"type": "go"}))
        await self._expect("ready", proc, reader, writer)
        self._proc = proc
        self._answering = asyncio.create_task(self._answer(reader, writer), name="front:control")

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The front's control channel, until it ends."""
        try:
            while (message := await asgi_pipe.read(reader)) is not None:
                if message["type"] == "events":
                    self.intake.taken_in([Event(**e) for e in message["events"]])
                elif message["type"] == "ask":
                    known = known_names(self.facade, message["names"])
                    writer.write(
                        asgi_pipe.encode({"type": "known", "id": message["id"], "names": known})
                    )
        except (ConnectionError, KeyError, TypeError, ValueError) as exc:  # PipeError too
            # A front that cannot hand its events over must not go on taking them in: it
            # is started again, and what it kept is taken from the spool.
            log.error("the front process's control channel failed", extra={"error": str(exc)})
            proc = self._proc
            if proc is not None and proc.returncode is None:
                proc.kill()
        finally:
            writer.close()

    async def _keep_running(self) -> None:
        in_a_row = 0
        while True:
            assert self._proc is not None
            code = await self._proc.wait()
            if self._stopping:
                return
            log.error("the front process ended; starting it again", extra={"status": code})
            if self._answering is not None:
                await self._answering  # what it handed over before it ended, first
            await self.intake.take_missed()
            await asyncio.sleep(RESTART_AFTER[min(in_a_row, len(RESTART_AFTER) - 1)])
            try:
                await self._go(*await self._spawn())
                self.restarts += 1
                in_a_row = 0
            except (FrontFailed, OSError) as exc:
                in_a_row += 1
                log.error("the front process did not start again", extra={"error": str(exc)})

    async def stop(self) -> None:
        """Stop the front (its requests under way end first), then the pipe. Once."""
        if self._stopping:
            return
        self._stopping = True
        if self._pending is not None:  # spawned, never told to serve
            spawned, _, writer = self._pending
            self._pending = None
            await _abandon(spawned, writer)
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_WITHIN)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._answering is not None:
            # Whatever the front handed over before it ended is taken in first.
            await self._answering
        if self._pipe is not None:
            self._pipe.close()
        if proc is not None:  # it served: what it kept and never handed over, now
            await self.intake.take_missed()
        shutil.rmtree(self._dir, ignore_errors=True)


async def _abandon(proc: asyncio.subprocess.Process, control: asyncio.StreamWriter) -> int:
    """Kill a front process that never served, and reap it: its exit status."""
    control.close()
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    return await proc.wait()
