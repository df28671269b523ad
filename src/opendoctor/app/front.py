"""The front door: HTTP served, and events taken in, on a loop of its own.

Where one process both takes events in and delivers them (embedded mode), a storm's
delivery filled the one event loop: each `PUT /events` waited for a turn of it to be
read, another to be stored and a third to be answered, behind thousands of callbacks
(344 ms at the median, 362 events/s accepted; 31 ms and 10,666/s on the idle service).
Here uvicorn runs on a thread of its own (`infra.loops.LoopThread`), and the events API is
served there in full: parsed, checked, stored by the journal's writer, handed to the bus
(`Service.submit`, from another loop). Every other request, the lifespan among them, runs
on the service's loop, where the state it reads lives (`infra.loops.bridged`).

A monitor's token that only Keystone can tell (keystone mode) is told on the service's
loop, where the Keystone client lives: the request goes there whole.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Literal

from fastapi import FastAPI

from opendoctor.api.auth import Monitors, asks_keystone
from opendoctor.api.events import INTAKE_ROUTES
from opendoctor.core.settings import Settings
from opendoctor.infra.loops import Receive, Scope, Send, bridged

log = logging.getLogger(__name__)

# Seconds the API keeps an idle connection open: longer than clients keep theirs
# (`infra.httpclient.KEEPALIVE`, 15 s; most HTTP clients are alike), so that a client
# never reuses a connection the server is closing, which fails a POST (an event) that
# the client then does not retry.
KEEP_ALIVE = 75


class Front:
    """The ASGI application the front loop's server runs: the events API here, the rest
    of `app` on `service_loop`."""

    def __init__(self, app: FastAPI, service_loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.service_loop = service_loop
        self.monitors: Monitors = app.state.monitors
        self.settings: Settings = app.state.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if in_front(scope, self.settings, self.monitors):
            await self.app(scope, receive, send)
        else:
            await bridged(self.app, self.service_loop, scope, receive, send)


def in_front(scope: Scope, settings: Settings, monitors: Monitors) -> bool:
    """Whether a request is served by the front itself: the events API, unless Keystone
    must tell who sent it."""
    if scope["type"] != "http" or (scope["method"], scope["path"]) not in INTAKE_ROUTES:
        return False
    token = next((v for k, v in scope["headers"] if k == b"x-auth-token"), None)
    text = token.decode("latin-1") if token is not None else None
    return not asks_keystone(text, settings.api, monitors)


FrontMode = Literal["off", "thread", "process"]
_CHOSEN: dict[str, FrontMode] = {"on": "thread", "off": "off", "process": "process"}


def mode(settings: Settings, roles: frozenset[str], apart: bool) -> FrontMode:
    """Where this process serves HTTP (`api.front_loop`): on the service's loop (off), on
    a loop of its own thread (on), or in a process of its own (process). By default, where
    it both takes events in and handles or delivers them: a process where another process
    can accept events (`apart`: the intake spool of SQLite and the in-process bus, or a
    server database and a broker), a thread elsewhere (where a process cannot, it falls
    back to a thread)."""
    choice = settings.api.front_loop
    if choice == "auto":
        takes_and_handles = "api" in roles and not roles.isdisjoint({"inspector", "notifier"})
        if not takes_and_handles:
            return "off"
        return "process" if apart else "thread"
    if choice == "process" and not apart:
        log.warning(
            "api.front_loop = process needs SQLite and the in-process bus, or PostgreSQL "
            "and RabbitMQ; serving on a front thread instead"
        )
        return "thread"
    return _CHOSEN[choice]


def stop_on_signals(stop: Callable[[int], None]) -> list[int]:
    """SIGTERM and SIGINT call `stop` (the front loop's server, or the front process's,
    stops as it would on the main thread: signals reach the main thread only). The
    signals received, to raise again once the service has stopped (`raise_again`), as
    uvicorn does: the process then ends as killed by them."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def received_one(sig: int) -> None:
        received.append(sig)
        stop(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, received_one, sig)
    return received


def raise_again(received: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for sig in reversed(received):
        loop.remove_signal_handler(sig)
        signal.raise_signal(sig)
