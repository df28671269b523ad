"""A service with its API on a real port, in a thread of its own (its own event loop,
started and stopped by the API's lifespan): for clients that talk HTTP synchronously."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.controller.memory import MemoryVim
from tests.integration.pipeline.conftest import lab_vim, settings_for
from tests.tcpproxy import free_port


@contextlib.contextmanager
def live_api(state_dir: Path, vim: MemoryVim | None = None, **settings: Any) -> Iterator[str]:
    """The URL of a service over the in-memory VIM of the pipeline tests, or `vim`
    (`settings` as `settings_for` takes them; `api.port` is the port it listens on)."""
    port = free_port()
    api = {**settings.pop("api", {}), "port": port}
    service = Service(settings_for(state_dir, api=api, **settings), vim=vim or lab_vim())
    config = uvicorn.Config(
        create_app(service.facade),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="asyncio",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
