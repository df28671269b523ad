"""The events sink setting of a lab's hosts: where they `PUT` events about their VMs,
and the base URL of their host link (by default derived from the events URL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from opendoctor.lab.manager.records import HostRecord
from opendoctor.lab.procs.hostlink import hostlink_base


class HostEvents:
    """One sink for every host; a host started or restored later gets it when it starts."""

    def __init__(self, hosts: dict[str, HostRecord]) -> None:
        self._hosts = hosts

    @property
    def sink(self) -> tuple[str | None, str | None]:
        """(URL, token) of the sink."""
        return next(iter(self._hosts.values())).proc.events_sink

    async def set_sink(
        self, url: str | None, token: str | None, hostlink_url: str | None = None
    ) -> dict[str, Any]:
        for host in self._hosts.values():
            host.proc.events_sink = (url, token)
            host.proc.hostlink_url = hostlink_url
        await self._each_alive_host(lambda h: h.proc.push_events_sink())
        return await self.status()

    async def status(self) -> dict[str, Any]:
        """`{"url", "hostlink_url", "token_set", "hosts": {name: sender statistics (with
        `hostlink`: the host link's) or {"error"}}}`."""
        url, token = self.sink
        stats = await self._each_alive_host(lambda h: h.proc.events_status())
        hostlink = hostlink_base(url, next(iter(self._hosts.values())).proc.hostlink_url)
        return {
            "url": url,
            "hostlink_url": hostlink,
            "token_set": token is not None,
            "hosts": stats,
        }

    async def _each_alive_host(
        self, call: Callable[[HostRecord], Coroutine[Any, Any, dict[str, Any]]]
    ) -> dict[str, Any]:
        alive = [h for h in self._hosts.values() if h.alive]
        results = await asyncio.gather(*(call(h) for h in alive), return_exceptions=True)
        return {
            h.name: {"error": str(r)} if isinstance(r, BaseException) else r
            for h, r in zip(alive, results, strict=True)
        }
