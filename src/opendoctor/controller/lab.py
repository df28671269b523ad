"""The `lab` VIM driver: `VimDriver` over the lab API (see `opendoctor.lab`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from opendoctor.core.model import Host, Server, ServerGroup, VimChange
from opendoctor.core.ports import VimError
from opendoctor.infra.httpclient import Requester
from opendoctor.lab.client import LabClient, LabError, read_lab_state

log = logging.getLogger(__name__)


@contextlib.contextmanager
def vim_errors() -> Iterator[None]:
    """The lab's refusals as the `VimError` every caller of a `VimDriver` handles."""
    try:
        yield
    except LabError as exc:
        raise VimError(str(exc), exc.status) from exc


# Changes per poll of the lab's feed: a failed host's thousands of server changes, read
# in one answer, were decoded and applied in one turn of the service's loop.
FEED_BATCH = 250


class LabDriver:
    """A `VimDriver` for a running lab. Every call may raise `VimError`."""

    def __init__(
        self,
        url: str,
        http: Requester | None = None,
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
    def from_state_dir(cls, state_dir: Path | str, http: Requester | None = None) -> LabDriver:
        with vim_errors():
            return cls(read_lab_state(state_dir)["url"], http)

    @property
    def url(self) -> str:
        return self.client.url

    async def list_hosts(self) -> list[Host]:
        with vim_errors():
            return await self.client.hosts()

    async def list_servers(self) -> list[Server]:
        with vim_errors():
            return await self.client.servers()

    async def force_down(self, host: str, down: bool) -> None:
        with vim_errors():
            await self.client.force_down(host, down)

    async def set_host_enabled(self, host: str, enabled: bool) -> None:
        with vim_errors():
            await self.client.set_enabled(host, enabled)

    async def reset_state(self, server_id: str, state: str) -> None:
        with vim_errors():
            await self.client.reset_state(server_id, state)

    async def reset_states(self, server_ids: Sequence[str], state: str) -> dict[str, str]:
        with vim_errors():
            _, refused = await self.client.reset_states(server_ids, state)
        return refused

    async def stop(self, server_id: str) -> None:
        with vim_errors():
            await self.client.stop(server_id)

    async def start(self, server_id: str) -> None:
        with vim_errors():
            await self.client.start(server_id)

    async def migrate(self, server_id: str, target_host: str | None = None) -> Server:
        with vim_errors():
            return await self.client.migrate(server_id, target_host)

    async def live_migrate(self, server_id: str, target_host: str | None = None) -> Server:
        with vim_errors():
            return await self.client.live_migrate(server_id, target_host)

    async def evacuate(self, server_id: str, target_host: str | None = None) -> Server:
        with vim_errors():
            return await self.client.evacuate(server_id, target_host)

    async def rebuild(self, server_id: str) -> Server:
        with vim_errors():
            return await self.client.rebuild(server_id)

    async def server_groups(self) -> list[ServerGroup]:
        with vim_errors():
            return await self.client.server_groups()

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
                seq, batch = await self.client.changes(since, self.poll_wait, FEED_BATCH)
            except LabError as exc:
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
