"""Keeping a process's picture of the cloud true: the topology and the entity graph, from
the store at once, then from the VIM, its change feed and now and then a full re-read.

The process keeps working from the last known topology while the VIM does not answer
(a VIM outage is when faults are likeliest); the feed and the re-reads catch up after.

What the API adds to the graph (switches, links) is stored as a change and applied in
the store's order, by the process that took it and, scaled out, by every other one
within `topology_sync_interval`; at start each process applies them all again, after
the topology file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from opendoctor.core.model import VimChange
from opendoctor.core.ports import VimDriver, VimError
from opendoctor.core.settings import InspectorSettings
from opendoctor.inspector.graph import RxGraph, topology_file
from opendoctor.inspector.graph.feed import GraphFeed
from opendoctor.inspector.topology import Topology
from opendoctor.monitor.probing import Probing
from opendoctor.store.pipeline import ResourceStore
from opendoctor.store.topology import TopologyChangeStore

log = logging.getLogger(__name__)

YIELD_EVERY = 100  # VIM changes applied before the loop runs its other callbacks


class TopologySync:
    """`writer`: this process stores the last known topology (the inspector role, its one
    writer). `probing`: the monitor's prober, which watches every host known."""

    def __init__(
        self,
        settings: InspectorSettings,
        vim: Callable[[], VimDriver],
        topology: Topology,
        graph: RxGraph,
        graph_feed: GraphFeed,
        resources: ResourceStore,
        react: Callable[[], None],
        changes: TopologyChangeStore,
        *,
        writer: bool,
        probing: Probing | None,
        shared: bool = False,
    ) -> None:
        self._settings = settings
        self._vim = vim
        self._topology = topology
        self._graph = graph
        self._feed = graph_feed
        self._resources = resources
        self._react = react
        self._writer = writer
        self._probing = probing
        self._changes = changes
        self._shared = shared
        self._seq = 0  # the last API change applied here
        self._applying = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def load(self) -> None:
        """Load hosts and servers: from the store at once, then from the VIM (or, while
        it does not answer, in the background until it does)."""
        hosts, servers = await self._resources.load()
        self._topology.load(hosts, servers)
        self._feed.load(hosts, servers)
        try:
            await self._sync_from_vim()
        except VimError as exc:
            log.warning(
                "VIM not answering; starting from the stored topology",
                extra={"error": str(exc), "hosts": len(hosts), "servers": len(servers)},
            )
            self._spawn(self._sync_until_done(), "vim-sync")
        self._load_file()
        await self.take_up()

    def follow(self) -> None:
        """From now on: apply the VIM's changes, and (the writer) re-read it now and then."""
        self._spawn(self._watch_vim(), "vim-changes")
        if self._writer and self._settings.consistency_interval > 0:
            self._spawn(self._check_consistency(), "consistency")
        if self._shared:
            self._spawn(self._follow_changes(), "topology-changes")

    async def add(self, body: topology_file.TopologyIn) -> topology_file.Loaded:
        """Store an API change and apply it (with any other process's before it)."""
        seq = await self._changes.append("add", body.model_dump(mode="json"))
        return (await self.take_up()).get(seq, topology_file.Loaded())

    async def remove(self, key: str) -> None:
        await self._changes.append("remove", {"key": key})
        await self.take_up()

    async def take_up(self) -> dict[int, topology_file.Loaded]:
        """Apply the API changes stored since the last one applied here, in order; the
        rules act on them once all are in."""
        results: dict[int, topology_file.Loaded] = {}
        async with self._applying:
            changes = await self._changes.since(self._seq)
            for seq, op, body in changes:
                if op == "add":
                    topology = topology_file.TopologyIn.model_validate(body)
                    results[seq] = topology_file.load(self._graph, topology)
                elif self._graph.get(body["key"]) is not None:
                    self._graph.remove(body["key"])
                self._seq = seq
        if changes:
            self._react()
        return results

    async def _follow_changes(self) -> None:
        while True:
            await asyncio.sleep(self._settings.topology_sync_interval)
            try:
                await self.take_up()
            except Exception as exc:  # the database: try again next time
                log.warning("topology changes not taken up", extra={"error": str(exc)})

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    def _load_file(self) -> None:
        """Add what the VIM does not know (switches, racks, feeds) from the static file."""
        path = self._settings.topology_file
        if path is None:
            return
        loaded = topology_file.load(self._graph, topology_file.parse(path))
        for warning in loaded.warnings:
            log.warning("topology file: %s", warning)
        log.info(
            "topology file loaded",
            extra={"file": str(path), "entities": loaded.entities, "relations": loaded.relations},
        )

    async def _sync_from_vim(self) -> int:
        """Re-read the VIM whole; returns how many stale entities left the graph."""
        vim = self._vim()
        hosts, servers = await asyncio.gather(vim.list_hosts(), vim.list_servers())
        self._topology.load(hosts, servers)
        stale = self._feed.load(hosts, servers)
        if self._probing is not None:
            for host in hosts:
                self._probing.watch(host)
        self._react()
        if self._writer:
            await self._resources.upsert(hosts, servers)
        return stale

    async def _check_consistency(self) -> None:
        """Now and then, re-read the VIM whole: a change the feed missed (a lost message,
        a deletion while we were down) must not live on in the graph."""
        while True:
            await asyncio.sleep(self._settings.consistency_interval)
            try:
                stale = await self._sync_from_vim()
            except Exception as exc:  # the VIM or the database: try again next time
                log.warning("consistency check skipped", extra={"error": str(exc)})
                continue
            if stale:
                log.info("consistency check removed stale entities", extra={"stale": stale})

    async def _sync_until_done(self) -> None:
        delay = 0.2
        while True:
            await asyncio.sleep(delay)
            try:
                await self._sync_from_vim()
                log.info("topology loaded from the VIM")
                return
            except VimError as exc:
                log.warning("VIM still not answering", extra={"error": str(exc)})
                delay = min(delay * 2, 5.0)

    async def _watch_vim(self) -> None:
        """Apply the VIM's changes to the topology now, and to the store in batches."""
        pending: dict[str, VimChange] = {}
        flushing: asyncio.Task[None] | None = None

        async def flush() -> None:
            # Many changes arrive together (a fault touches every server of a host):
            # one write for the lot, a moment later, off the path that handles them.
            await asyncio.sleep(0.2)
            batch = list(pending.values())
            pending.clear()
            upserts = [c for c in batch if c.op != "delete"]
            gone = [c for c in batch if c.op == "delete"]
            try:
                await self._resources.upsert(
                    [c.host for c in upserts if c.host is not None],
                    [c.server for c in upserts if c.server is not None],
                )
                await self._resources.delete(
                    [f"host:{c.host.name}" for c in gone if c.host is not None]
                    + [f"server:{c.server.id}" for c in gone if c.server is not None]
                )
            except Exception:
                log.exception("could not store resource changes")

        applied = 0
        async for change in self._vim().changes():
            self._apply(change)
            applied += 1
            if applied % YIELD_EVERY == 0:
                # A feed hands over its changes a thousand at a time (every server of a
                # failed host marked in error): applied in one go they held the loop 15
                # ms, and every owner's callback in flight waited behind them.
                await asyncio.sleep(0)
            if not self._writer:
                continue
            if change.host is not None:
                pending[f"host:{change.host.name}"] = change
            elif change.server is not None:
                pending[f"server:{change.server.id}"] = change
            if flushing is None or flushing.done():
                flushing = asyncio.create_task(flush())

    def _apply(self, change: VimChange) -> None:
        self._topology.apply(change)
        self._feed.apply(change)
        self._react()
        if change.kind == "host" and change.host is not None and self._probing is not None:
            if change.op == "delete":
                self._probing.unwatch(change.host.name)
            else:
                self._probing.watch(change.host)
