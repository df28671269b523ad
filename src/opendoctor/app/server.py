"""Running the service with its HTTP API under uvicorn (`opendoctor serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from opendoctor.api.app import create_app
from opendoctor.app import front
from opendoctor.app.front import KEEP_ALIVE
from opendoctor.app.front_link import FrontFailed, FrontProcess
from opendoctor.app.service import Service
from opendoctor.core.settings import Settings
from opendoctor.infra.heap import HeapKeeper
from opendoctor.infra.live import Hub
from opendoctor.infra.loops import Asgi, LoopThread
from opendoctor.infra.procs import announce_ready
from opendoctor.web import routes as web

log = logging.getLogger(__name__)


class Server(uvicorn.Server):
    """uvicorn, ending the live streams (`GET /v1/stream`) as it begins to shut down: it
    waits for every response to end before the lifespan stops the service, and a stream
    does not end by itself. The hub lives on the service's loop, which may not be this
    server's (app/front.py)."""

    def __init__(
        self, config: uvicorn.Config, live: Hub, service_loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(config)
        self.live = live
        self.service_loop = service_loop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.service_loop.call_soon_threadsafe(self.live.close)
        await super().shutdown(sockets)


@dataclass
class Serving:
    """The API served: where, what ends when it has stopped, how to ask it to stop."""

    url: str
    stopped: asyncio.Future[None]
    mode: front.FrontMode  # where HTTP is served (app/front.py)
    stop: Callable[[int], None]  # ask it to stop (the signal that asks)
    front_process: FrontProcess | None = None


@asynccontextmanager
async def serving(service: Service) -> AsyncIterator[Serving]:
    """The API of `service` served (the service started by its lifespan); on leaving, the
    server shut down gracefully (the service stopped) and the front's thread or process
    ended."""
    settings = service.settings
    app = create_app(service.facade)
    # The dashboard, beside the API it reads.
    web.mount(app)
    intake = service.intake
    mode = front.mode(settings, service.roles, intake.spooled or intake.direct)
    # Bound before the service starts: a maintenance session it takes up sends notices at
    # once, and the links they carry must name the port the owners will reach.
    try:
        listening = _config(settings, app).bind_socket()
    except SystemExit:  # uvicorn has logged why (the port is taken)
        raise SystemExit(1) from None
    url = f"http://{settings.api.host}:{listening.getsockname()[1]}"
    service.maintenance_part.listening(url)
    try:
        if mode == "process":
            async with _front_process(service, app, listening, url) as served:
                yield served
        else:
            async with _on_loops(service, app, listening, url, mode) as served:
                yield served
    finally:
        listening.close()


@asynccontextmanager
async def _on_loops(
    service: Service, app: FastAPI, listening: socket.socket, url: str, mode: front.FrontMode
) -> AsyncIterator[Serving]:
    """uvicorn on the service's loop (off), or on a front loop of its own (thread)."""
    here = asyncio.get_running_loop()
    thread = LoopThread("front") if mode == "thread" else None
    served_app = app if thread is None else front.Front(app, here)
    server = Server(_config(service.settings, served_app), service.live, here)
    task: asyncio.Future[None]
    if thread is None:
        task = asyncio.create_task(server.serve(sockets=[listening]))
    else:
        thread.start()
        task = asyncio.ensure_future(thread.run(_serving(server, listening)))
    try:
        while not server.started:
            if task.done():
                await task  # raises what stopped it
                raise SystemExit(1)
            await asyncio.sleep(0.02)
        yield Serving(url, task, mode, lambda sig: server.handle_exit(sig, None))
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        if thread is not None:
            thread.stop()


def _config(settings: Settings, app: Asgi) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="none",
        timeout_keep_alive=KEEP_ALIVE,
    )


@asynccontextmanager
async def _front_process(
    service: Service, app: FastAPI, listening: socket.socket, url: str
) -> AsyncIterator[Serving]:
    """The service started here, its HTTP served by a front process (app/front_link.py)
    on the socket bound here."""
    stopped = asyncio.get_running_loop().create_future()

    def stop(_: int) -> None:
        if not stopped.done():
            stopped.set_result(None)

    process = FrontProcess(app, service.settings, service.facade, service.intake, listening)
    try:
        # Loaded first (a second or more), so that it serves as soon as the service has
        # started: the service's work begins at once, and needs its API.
        await process.spawn()
        async with app.router.lifespan_context(app):
            try:
                await process.start()
            except FrontFailed as exc:
                log.error("%s", exc)
                raise SystemExit(1) from None
            try:
                yield Serving(url, stopped, "process", stop, process)
            finally:
                # Streams end first: the front waits for every response to end.
                service.live.close()
                await process.stop()
    finally:
        await process.stop()  # a front spawned for a service that did not start


async def serve(settings: Settings, ready_file: Path | None = None) -> None:
    service = Service(settings)
    received: list[int] = []
    async with serving(service) as served:
        if served.mode != "off":
            received = front.stop_on_signals(served.stop)
        # What is loaded now (modules, topology, alarms), and what the collector finds
        # alive later, is kept out of its full walks: they would pause the loop in the
        # middle of a fault (`infra.heap`).
        heap = HeapKeeper()
        heap.start()
        try:
            announce_ready(ready_file, served.url)
            await served.stopped
        finally:
            await heap.stop()
    front.raise_again(received)


async def _serving(server: Server, listening: socket.socket) -> None:
    """The server on the front loop's thread. uvicorn exits (SystemExit, having logged
    why) when it cannot start, which would end that thread unseen: here it returns,
    unstarted, and `serve` exits as it does when uvicorn runs on the main thread."""
    with contextlib.suppress(SystemExit):
        await server.serve(sockets=[listening])


def run(settings: Settings, ready_file: Path | None = None) -> None:
    try:
        import uvloop

        uvloop.run(serve(settings, ready_file))
    except ImportError:
        asyncio.run(serve(settings, ready_file))
