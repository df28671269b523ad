"""The guest agent's socket for applications: server-group messaging from inside a VM.

A local Unix socket (mode 0600, or 0660 for a group of users), one JSON object per
line each way. An application sends to its server group and asks for its peers'
status; it receives the group's messages, its peers' state changes and the answers to
its requests. The agent relays between its applications and the host's channel:

  app -> agent  {"type": "send", "payload": STR, "group"?: ID, "msg_id"?: STR}
                {"type": "status", "request_id": STR, "group"?: ID}
  agent -> app  {"type": "sent", "msg_id"}        (the send is on its way to the host)
                {"type": "message", "from", "group", "payload", "msg_id"}
                {"type": "peer-state", "group", "peer", "peer_name", "state", "host", "reason"}
                {"type": "status-response", "request_id", "peers": [...]}
                {"type": "error", "ref", "code", "detail"}

The agent passes an application's ids on, except one that another application's
request is still waiting under: that gets an id of the agent's own on the channel, so
that two applications using the same ids get their own answers. Everything is bounded: the
connections, a line, the messages queued for a slow application (beyond that the
oldest are dropped and counted), and the sends per second of each application.
Standard library only; `opendoctor.heartbeat.groupclient` is a client for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from opendoctor.wire import heartbeat as p

log = logging.getLogger("opendoctor.heartbeat")

MAX_APP_LINE = 32 * 1024  # a 3,050-byte payload escaped as \uXXXX fits with room to spare
MAX_APPS = 16
MAX_QUEUE = 256  # messages waiting for one application
MAX_PENDING = 4096  # ids of sends and requests awaiting an answer from the host
APP_RATE, APP_BURST = 50.0, 100
SEND_TIMEOUT = 1.0

# Hands a server-group PDU to the host; None when it is on its way, else an error code.
SendUp = Callable[[dict[str, Any]], str | None]


class _App:
    """One application's connection and the messages waiting for it."""

    def __init__(self, hub: AppHub, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.hub, self.reader, self.writer = hub, reader, writer
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.bucket = p.RateLimit(APP_RATE, APP_BURST)
        self.dropped = 0

    def put(self, message: dict[str, Any]) -> None:
        if len(self.queue) >= MAX_QUEUE:
            # A slow reader loses its oldest news, never the agent its memory.
            self.queue.popleft()
            self.dropped += 1
            self.hub.counters["dropped"] += 1
        self.queue.append(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self.wake.set()

    async def write_loop(self) -> None:
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            self.writer.write(self.queue.popleft())
            async with asyncio.timeout(SEND_TIMEOUT * 10):
                await self.writer.drain()


class AppHub:
    """Serves the application socket and routes between applications and the host."""

    def __init__(self, path: str, send_up: SendUp, mode: int = 0o600) -> None:
        if mode & ~0o660:
            raise ValueError("the application socket's mode may be 0600 or 0660, no wider")
        self.path, self.mode = path, mode
        self._send_up = send_up
        self._apps: set[_App] = set()
        # agent id -> (application, the application's own id)
        self._pending: OrderedDict[str, tuple[_App, str]] = OrderedDict()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters = dict.fromkeys(("sent", "received", "dropped", "refused", "bad_request"), 0)

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise FileExistsError(f"{self.path} exists and is not a socket")
            os.unlink(self.path)
        # Bound without any access for others (no window in which anyone may connect),
        # then opened up to the mode asked for. No await in between: the umask is the
        # process's, and nothing else may create a file under it.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)
            try:
                sock.bind(self.path)
            finally:
                os.umask(old)
            os.chmod(self.path, self.mode)
        except OSError:
            sock.close()
            raise
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_APP_LINE)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for app in list(self._apps):
            app.writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    @property
    def apps(self) -> int:
        return len(self._apps)

    # ----- from applications ------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._apps) >= MAX_APPS:
            self.counters["refused"] += 1
            writer.close()
            return
        app = _App(self, reader, writer)
        self._apps.add(app)
        if task is not None:
            self._tasks.add(task)
        writing = asyncio.create_task(app.write_loop())
        # An application that stops reading for long loses its connection (and the
        # read below ends with it).
        writing.add_done_callback(lambda _: writer.close())
        lines = p.LineReader(reader, MAX_APP_LINE)
        try:
            while True:
                try:
                    line = await lines.readline()
                except p.ProtocolError as exc:
                    app.put(_error(None, "too-large", str(exc)))
                    continue
                if line is None:
                    break
                if line.strip():
                    self._from_app(app, line)
        except (OSError, TimeoutError):
            pass
        finally:
            self._apps.discard(app)
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, TimeoutError):
                await writing
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    def _from_app(self, app: _App, line: bytes) -> None:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError too
            self.counters["bad_request"] += 1
            app.put(_error(None, "bad-request", f"not a JSON object: {exc}"[:200]))
            return
        kind = request.get("type")
        own = request.get("request_id" if kind == "status" else "msg_id")
        if own is not None and (not isinstance(own, str) or not 0 < len(own) <= p.MAX_REF):
            app.put(_error(None, "bad-request", f"ids are strings of 1-{p.MAX_REF} characters"))
            return
        own = own or uuid.uuid4().hex
        # The application's own id on the channel too (peers see the msg_id it chose),
        # unless another application's request is waiting under it.
        ours = own if own not in self._pending else uuid.uuid4().hex
        if kind == "send":
            body = {"type": p.SEND, "msg_id": ours, "payload": request.get("payload")}
        elif kind == "status":
            body = {"type": p.STATUS_REQUEST, "request_id": ours}
        else:
            self.counters["bad_request"] += 1
            app.put(_error(own, "bad-request", "type must be 'send' or 'status'"))
            return
        body["group"] = request.get("group")
        try:
            p.validate_pdu(body, p.GROUP_SERVER_GROUP)
        except p.ProtocolError as exc:
            code = "too-large" if exc.kind == "too-large" else "bad-request"
            app.put(_error(own, code, exc.detail))
            return
        if not app.bucket.take():
            app.put(_error(own, "rate-limited", f"more than {APP_RATE:g} per second"))
            return
        problem = self._send_up(body)
        if problem is not None:
            app.put(_error(own, problem, "the agent cannot reach its host now"))
            return
        self._remember(ours, app, own)
        if kind == "send":
            self.counters["sent"] += 1
            app.put({"type": "sent", "msg_id": own})

    def _remember(self, ours: str, app: _App, own: str) -> None:
        self._pending[ours] = (app, own)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    # ----- from the host ----------------------------------------------------------------

    def from_host(self, body: dict[str, Any]) -> None:
        """A server-group PDU from the host: to every application, or to the one that
        sent what it answers."""
        kind = body["type"]
        self.counters["received"] += 1
        if kind in (p.MESSAGE, p.PEER_STATE):
            message = {k: v for k, v in body.items() if k != "to"}
            for app in list(self._apps):
                app.put(message)
            return
        ref_key = "request_id" if kind == p.STATUS_RESPONSE else "ref"
        ref = body.get(ref_key)
        target = self._pending.pop(ref, None) if isinstance(ref, str) else None
        if target is None:
            if kind == p.ERROR:
                log.info("host error for nobody waiting: %s %s", body["code"], body.get("detail"))
            return
        app, own = target
        if app in self._apps:
            app.put({**body, ref_key: own})


def _error(ref: str | None, code: str, detail: str) -> dict[str, Any]:
    return {"type": "error", "ref": ref, "code": code, "detail": detail}
