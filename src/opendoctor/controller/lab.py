"""The `lab` VIM driver: `VimDriver` over the lab API (see `opendoctor.lab`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from opendoctor.controller.base import VimError
from opendoctor.httpclient import HttpClient
from opendoctor.lab.client import LabClient, read_lab_state
from opendoctor.model import Host, Server, VimChange

log = logging.getLogger(__name__)


class LabDriver:
    """A `VimDriver` for a running lab. Every call may raise `VimError`."""

    def __init__(
        self,
        url: str,
        http: HttpClient | None = None,
        *,
        poll_wait: float = 20.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
    ) -> None:
        self.client = LabClient(url, http)
        self.poll_wait = poll_wait
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max

    @classmethod
    def from_state_dir(cls, state_dir: Path | str, http: HttpClient | None = None) -> LabDriver:
        return cls(read_lab_state(state_dir)["url"], http)

    @property
    def url(self) -> str:
        return self.client.url

    async def list_hosts(self) -> list[Host]:
        return await self.client.hosts()

    async def list_servers(self) -> list[Server]:
        return await self.client.servers()

    async def force_down(self, host: str, down: bool) -> None:
        await self.client.force_down(host, down)

    async def set_host_enabled(self, host: str, enabled: bool) -> None:
        await self.client.set_enabled(host, enabled)

    async def reset_state(self, server_id: str, state: str) -> None:
        await self.client.reset_state(server_id, state)

    async def stop(self, server_id: str) -> None:
        await self.client.stop(server_id)

    async def start(self, server_id: str) -> None:
        await self.client.start(server_id)

    async def migrate(self, server_id: str, target_host: str | None = None) -> Server:
        return await self.client.migrate(server_id, target_host)

    async def evacuate(self, server_id: str, target_host: str | None = None) -> Server:
        return await self.client.evacuate(server_id, target_host)

    def changes(self) -> AsyncIterator[VimChange]:
        return self._follow()

    async def _follow(self) -> AsyncIterator[VimChange]:
        since: int | None = None
        delay = self.backoff_initial
        while True:
            try:
                if since is None:
                    # Only what happens from now on: the caller lists hosts and servers itself.
                    since = int((await self.client.health())["seq"])
                seq, batch = await self.client.changes(since, self.poll_wait)
            except VimError as exc:
                # A restarting lab or a network hiccup must not end the feed.
                log.warning("lab change feed: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            delay = self.backoff_initial
            since = seq
            for change in batch:
                yield change

    async def close(self) -> None:
        await self.client.close()
