"""The HTTP front in a process of its own (`api.front_loop = "process"`): the child's side.

Why a process: with the front on a thread (app/front.py), the events API no longer waited
for the service's loop, but it still shared one interpreter lock with it. During a storm
the delivery kept that lock, and each time the front's thread let go of it (to read a
socket, to wait for the spool's commit) it waited up to a switch interval to get it back:
about 2,000 events/s accepted against 14,000/s on the idle service. A process has an
interpreter, and a core, of its own.

What runs here: uvicorn, on the listening socket the service bound and passed down, so
that a restart of this process loses no connection that was waiting; the events API in
full (parsed, checked, kept in the intake spool, answered `202`); every other request
served by the service's process through `infra.asgi_pipe`. The service's side, which
starts, watches and restarts this process, is app/front_link.py.

The control channel, a socket pair, carries JSON frames (`infra.asgi_pipe.encode`): the
settings first (secrets never reach argv), and `loaded` back once this process is ready
to serve; `go` once the service has started, and `ready` back once this process serves;
then the events accepted, in the
order their spool writes ended; and questions about names this process has not seen
(`KnownNames`), each answered by the service from its topology.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

from opendoctor.api import events as events_api
from opendoctor.api.auth import Monitors
from opendoctor.api.bounds import BodyLimit
from opendoctor.api.errors import install_error_handlers
from opendoctor.api.events import DoctorEvent, Names
from opendoctor.api.ratelimit import RateLimit
from opendoctor.app.front import KEEP_ALIVE, in_front
from opendoctor.app.intake import Intake
from opendoctor.bus.factory import make_bus
from opendoctor.core.model import Event
from opendoctor.core.settings import Settings
from opendoctor.infra import asgi_pipe, logs
from opendoctor.infra.loops import Receive, Scope, Send, new_loop
from opendoctor.store.db import Database
from opendoctor.store.event_spool import EventSpool
from opendoctor.store.pipeline import EventStore

log = logging.getLogger(__name__)

# Seconds a name the service said it knows is taken as known without asking again: a
# server deleted meanwhile may have an event accepted for it, which the inspector drops.
KNOWN_FOR = 10.0

Ask = Callable[[Names], Awaitable[Names]]


class KnownNames:
    """The hosts, servers and graph resources the service knows, as it last said: a
    request's names are looked up here, and only those not found (or found too long ago)
    are asked of the service, in one question per request."""

    def __init__(self, ask: Ask) -> None:
        self._ask = ask
        self._until: dict[str, dict[str, float]] = {kind: {} for kind in events_api.NAME_KINDS}
        self._pruned = 0.0

    async def check(self, parsed: list[DoctorEvent]) -> None:
        wanted = events_api.names_in(parsed)
        now = time.monotonic()
        missing = {
            kind: sorted(n for n in names if self._until[kind].get(n, 0.0) < now)
            for kind, names in wanted.items()
        }
        answer: Names = {}
        if any(missing.values()):
            answer = await self._ask({k: v for k, v in missing.items() if v})
            until = time.monotonic() + KNOWN_FOR
            self._forget_old(now)
            for kind, names in answer.items():
                if kind in self._until:
                    self._until[kind].update(dict.fromkeys(names, until))
        fresh = {kind: set(names) for kind, names in answer.items()}

        def known(kind: str, name: str) -> bool:
            return name in fresh.get(kind, ()) or self._until[kind].get(name, 0.0) >= now

        events_api.refuse_unknown(wanted, known)

    def _forget_old(self, now: float) -> None:
        # Servers come and go for months: what is no longer fresh goes, now and then.
        if now - self._pruned < KNOWN_FOR:
            return
        self._pruned = now
        for kind, seen in self._until.items():
            self._until[kind] = {n: t for n, t in seen.items() if t >= now}


class Control:
    """This process's end of the control channel."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._asked: dict[int, asyncio.Future[Names]] = {}
        self.go = asyncio.Event()  # the service has started: serve
        self._ids = itertools.count(1)

    async def send(self, message: dict[str, Any]) -> None:
        self.writer.write(asgi_pipe.encode(message))
        await self.writer.drain()

    async def ask(self, names: Names) -> Names:
        ask_id = next(self._ids)
        answer = self._asked[ask_id] = asyncio.get_running_loop().create_future()
        try:
            await self.send({"type": "ask", "id": ask_id, "names": names})
            known: Names = await answer
            return known
        finally:
            self._asked.pop(ask_id, None)

    async def run(self) -> None:
        """Take the service's word to serve, then its answers, until the channel ends
        (the service stopped)."""
        try:
            while (message := await asgi_pipe.read(self.reader)) is not None:
                if message["type"] == "go":
                    self.go.set()
                elif message["type"] == "known":
                    answer = self._asked.get(message["id"])
                    if answer is not None and not answer.done():
                        answer.set_result(message["names"])
        finally:
            for answer in self._asked.values():
                if not answer.done():
                    answer.set_exception(ConnectionError("the service is gone"))


class FrontIntake:
    """`api.events.EventIntake` in the front process: names checked with the service,
    events kept in the spool, then handed to the service over the control channel."""

    def __init__(self, control: Control, spool: EventSpool) -> None:
        self.control = control
        self.spool = spool
        self.names = KnownNames(control.ask)

    async def check(self, parsed: list[DoctorEvent]) -> None:
        await self.names.check(parsed)

    async def submit(self, events: list[Event]) -> None:
        # Shielded: once in the spool, the service must hear of them even if the caller
        # goes away (it would otherwise find them at its next start only).
        await asyncio.shield(self._handed(events))

    async def _handed(self, events: list[Event]) -> None:
        await self.spool.add(events)
        await self.control.send({"type": "events", "events": [e.to_dict() for e in events]})

    async def close(self) -> None:
        await self.spool.close()


class DirectIntake:
    """`api.events.EventIntake` in the front process of a scaled-out deployment (a server
    database and a broker): names checked with the service, events written to the journal
    and published from here, as the service's own intake does, on connections of this
    process's own. The service's loop is not waited for."""

    def __init__(self, control: Control, intake: Intake) -> None:
        self.names = KnownNames(control.ask)
        self.intake = intake

    @classmethod
    async def open(cls, control: Control, settings: Settings) -> DirectIntake:
        from opendoctor.bus.amqp import AmqpBus  # the amqp extra: scaled-out mode only

        db = Database(settings.db_url)
        bus = make_bus(settings)
        assert isinstance(bus, AmqpBus)  # `Intake.direct`: a broker
        try:
            await bus.connect()
        except BaseException:
            await db.close()
            raise
        return cls(control, Intake(EventStore(db), bus))

    async def check(self, parsed: list[DoctorEvent]) -> None:
        await self.names.check(parsed)

    async def submit(self, events: list[Event]) -> None:
        await self.intake.submit(events)

    async def close(self) -> None:
        await self.intake.bus.close()
        await self.intake.events.db.close()


def events_app(settings: Settings, intake: events_api.EventIntake) -> FastAPI:
    """The events API alone, with the service's error shapes and body limit."""
    app = FastAPI(title="opendoctor front", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.monitors = Monitors.load(settings.api)
    app.state.keystone = None  # a Keystone token's request is the service's (`Front.here`)
    app.state.events_rate = RateLimit(settings.api.events_rate, settings.api.events_burst)
    app.state.intake = intake
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes)
    app.include_router(events_api.router)
    return app


class Dispatcher:
    """The ASGI application uvicorn runs here: the events API, or the service's process."""

    def __init__(self, app: FastAPI, pipe: str) -> None:
        self.app = app
        self.pipe = pipe
        self.monitors: Monitors = app.state.monitors
        self.settings: Settings = app.state.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif in_front(scope, self.settings, self.monitors):
            await self.app(scope, receive, send)
        else:
            await asgi_pipe.forward(self.pipe, scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    # The service started before this process did, and stops after it.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def main(control_fd: int, listen_fd: int, pipe: str) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=control_fd))
    first = await asgi_pipe.read(reader)
    if first is None or first["type"] != "settings":
        raise SystemExit("the service sent no settings")
    settings = Settings.model_validate(first["settings"])
    logs.setup(settings.log_level, settings.log_format)
    control = Control(reader, writer)
    intake: FrontIntake | DirectIntake
    if first["spool"] is not None:
        intake = FrontIntake(control, EventSpool(first["spool"]))
    else:
        intake = await DirectIntake.open(control, settings)
    app = events_app(settings, intake)
    config = uvicorn.Config(
        Dispatcher(app, pipe),
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="none",
        timeout_keep_alive=KEEP_ALIVE,
    )
    server = uvicorn.Server(config)
    await control.send({"type": "loaded"})
    listening = asyncio.create_task(control.run())
    go = asyncio.create_task(control.go.wait())
    await asyncio.wait({go, listening}, return_when=asyncio.FIRST_COMPLETED)
    if not go.done():  # the service ended before it started
        go.cancel()
        await intake.close()
        return
    serving = asyncio.create_task(server.serve(sockets=[socket.socket(fileno=listen_fd)]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        await control.send({"type": "ready"})
    # The service gone (or stopping us): no event could be handed over any more.
    await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving
    listening.cancel()
    await intake.close()
    writer.close()


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--pipe", required=True)
    args = parser.parse_args(argv)
    loop = new_loop()
    try:
        loop.run_until_complete(main(args.control_fd, args.listen_fd, args.pipe))
    finally:
        loop.close()


if __name__ == "__main__":
    run()
