"""Running the service with its HTTP API under uvicorn (`opendoctor serve`)."""

from __future__ import annotations

import asyncio
import gc
import socket
from pathlib import Path

import uvicorn

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.core.settings import Settings
from opendoctor.infra.live import Hub
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
    does not end by itself."""

    def __init__(self, config: uvicorn.Config, live: Hub) -> None:
        super().__init__(config)
        self.live = live

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.live.close()
        await super().shutdown(sockets)


async def serve(settings: Settings, ready_file: Path | None = None) -> None:
    service = Service(settings)
    app = create_app(service.facade)
    # The dashboard, beside the API it reads.
    web.mount(app)
    config = uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="none",
        timeout_keep_alive=KEEP_ALIVE,
    )
    server = Server(config, service.live)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # raises what stopped it
            raise SystemExit(1)
        await asyncio.sleep(0.02)
    # Everything allocated so far (modules, topology, alarms) lives as long as the
    # process: keep it out of the collector's full passes, which would otherwise walk
    # it all and pause the loop in the middle of a fault.
    gc.collect()
    gc.freeze()
    sockets = [s for srv in server.servers for s in srv.sockets]
    port = sockets[0].getsockname()[1] if sockets else settings.api.port
    url = f"http://{settings.api.host}:{port}"
    # The port bound (0 picks one): what owners' notices link to, unless configured.
    service.maintenance_part.listening(url)
    announce_ready(ready_file, url)
    await task


def run(settings: Settings, ready_file: Path | None = None) -> None:
    try:
        import uvloop

        uvloop.run(serve(settings, ready_file))
    except ImportError:
        asyncio.run(serve(settings, ready_file))
