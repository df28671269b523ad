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
import signal

import uvicorn
from fastapi import FastAPI

from opendoctor.api.auth import Monitors, asks_keystone
from opendoctor.api.events import INTAKE_ROUTES
from opendoctor.core.settings import Settings
from opendoctor.infra.loops import Receive, Scope, Send, bridged


class Front:
    """The ASGI application the front loop's server runs: the events API here, the rest
    of `app` on `service_loop`."""

    def __init__(self, app: FastAPI, service_loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.service_loop = service_loop
        self.monitors: Monitors = app.state.monitors
        self.settings: Settings = app.state.settings

    def here(self, scope: Scope) -> bool:
        """Whether this request is served on the front loop."""
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in INTAKE_ROUTES:
            return False
        token = next((v for k, v in scope["headers"] if k == b"x-auth-token"), None)
        text = token.decode("latin-1") if token is not None else None
        return not asks_keystone(text, self.settings.api, self.monitors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.here(scope):
            await self.app(scope, receive, send)
        else:
            await bridged(self.app, self.service_loop, scope, receive, send)


def wanted(settings: Settings, roles: frozenset[str]) -> bool:
    """Whether this process serves HTTP on a front loop (`api.front_loop`; by default,
    where it both takes events in and handles or delivers them)."""
    choice = settings.api.front_loop
    if choice != "auto":
        return choice == "on"
    return "api" in roles and not roles.isdisjoint({"inspector", "notifier"})


def stop_on_signals(server: uvicorn.Server) -> list[int]:
    """SIGTERM and SIGINT stop the front loop's server as they would stop it on the main
    thread (signals reach the main thread only); a second SIGINT forces it. The signals
    received, to raise again once the service has stopped (`raise_again`), as uvicorn
    does: the process then ends as killed by them."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def received_one(sig: int) -> None:
        received.append(sig)
        server.handle_exit(sig, None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, received_one, sig)
    return received


def raise_again(received: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for sig in reversed(received):
        loop.remove_signal_handler(sig)
        signal.raise_signal(sig)
