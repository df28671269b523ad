"""Running the service with its HTTP API under uvicorn (`opendoctor serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from opendoctor.api.app import create_app
from opendoctor.app import front
from opendoctor.app.service import Service
from opendoctor.core.settings import Settings
from opendoctor.infra.live import Hub
from opendoctor.infra.loops import LoopThread
from opendoctor.infra.procs import announce_ready
from opendoctor.web import routes as web

# Seconds the API keeps an idle connection open: longer than clients keep theirs
# (`infra.httpclient.KEEPALIVE`, 15 s; most HTTP clients are alike), so that a client
# never reuses a connection the server is closing, which fails a POST (an event) that
# the client then does not retry.
KEEP_ALIVE = 75


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
    """The API served: where, by which server, and what ends when the server has stopped."""

    url: str
    server: Server
    stopped: asyncio.Future[None]
    front: bool  # served on a front loop of its own (app/front.py)


@asynccontextmanager
async def serving(service: Service) -> AsyncIterator[Serving]:
    """The API of `service` served (the service started by its lifespan); on leaving, the
    server shut down gracefully (the service stopped) and the front loop's thread ended."""
    settings = service.settings
    app = create_app(service.facade)
    # The dashboard, beside the API it reads.
    web.mount(app)
    here = asyncio.get_running_loop()
    thread = LoopThread("front") if front.wanted(settings, service.roles) else None
    config = uvicorn.Config(
        app if thread is None else front.Front(app, here),
        host=settings.api.host,
        port=settings.api.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="none",
        timeout_keep_alive=KEEP_ALIVE,
    )
    server = Server(config, service.live, here)
    task: asyncio.Future[None]
    if thread is None:
        task = asyncio.create_task(server.serve())
    else:
        thread.start()
        task = asyncio.ensure_future(thread.run(_serving(server)))
    try:
        while not server.started:
            if task.done():
                await task  # raises what stopped it
                raise SystemExit(1)
            await asyncio.sleep(0.02)
        sockets = [s for srv in server.servers for s in srv.sockets]
        port = sockets[0].getsockname()[1] if sockets else settings.api.port
        yield Serving(f"http://{settings.api.host}:{port}", server, task, thread is not None)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        if thread is not None:
            thread.stop()


async def serve(settings: Settings, ready_file: Path | None = None) -> None:
    service = Service(settings)
    received: list[int] = []
    async with serving(service) as served:
        if served.front:
            received = front.stop_on_signals(served.server)
        # Everything allocated so far (modules, topology, alarms) lives as long as the
        # process: keep it out of the collector's full passes, which would otherwise walk
        # it all and pause the loop in the middle of a fault.
        gc.collect()
        gc.freeze()
        # The port bound (0 picks one): what owners' notices link to, unless configured.
        service.maintenance_part.listening(served.url)
        announce_ready(ready_file, served.url)
        await served.stopped
    front.raise_again(received)


async def _serving(server: Server) -> None:
    """The server on the front loop's thread. uvicorn exits (SystemExit, having logged
    why) on a port it cannot bind, which would end that thread unseen: here it returns,
    unstarted, and `serve` exits as it does when uvicorn runs on the main thread."""
    with contextlib.suppress(SystemExit):
        await server.serve()


def run(settings: Settings, ready_file: Path | None = None) -> None:
    try:
        import uvloop

        uvloop.run(serve(settings, ready_file))
    except ImportError:
        asyncio.run(serve(settings, ready_file))
