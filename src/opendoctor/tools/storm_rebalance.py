"""`opendoctor bench storm --kill-restart ROLE`: throughput before, during and after a
replica of ROLE is killed and restarted (modes with two or more replicas per role).

Every stormed host cycles on its own, one event at a time: `up` (its fault clears),
then `down` (a new fault), and so on; the next event of a host is sent once the
service's faults show the last one handled (`GET /v1/faults?status=active`, polled).
So about as many events wait on the bus as there are hosts, every partition has work,
and the events handled per second are what the replicas can do. Three windows of the
same run, side by side:

* before: the cluster as started;
* down: from the kill (SIGKILL) of `ROLE-0` until its restart; its partitions are
  served by the survivors;
* after: from the moment its partitions came back (the survivors serve none of them,
  seen in their `/health`) for as long as the first window.

Also: how long the restart took (process start until it answers), how long after it
answered the partitions came back, and events never seen handled (there should be
none: a killed replica's messages go to a survivor, a hand-back requeues nothing it
handled).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from opendoctor.app.cluster import Cluster
from opendoctor.infra.httpclient import HttpError
from opendoctor.tools.stack import Stack, StackError, wait_for

WARM_UP = 3.0  # seconds of cycling before the first window
POLL = 0.2  # seconds between two looks at the active faults
LOST_AFTER = 60.0  # seconds after which an event not seen handled counts as lost

PutEvents = Callable[[list[dict[str, Any]]], Awaitable[float]]
HostEvent = Callable[[str, str, float, str], dict[str, Any]]


class Cycling:
    """Every host cycling up/down, one event at a time; when each event was seen handled."""

    def __init__(self, s: Stack, hosts: list[str], put: PutEvents, event: HostEvent) -> None:
        self.s = s
        self.hosts = hosts
        self.put = put
        self.event = event
        self.handled: list[float] = []  # monotonic times
        self.lost = 0
        self._active: set[str] = set(hosts)  # the storm left them down
        self._waiting: dict[str, tuple[bool, asyncio.Future[None]]] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _poll(self) -> None:
        limit = len(self.hosts) + 10
        while True:
            try:
                faults = await self.s.get(f"/v1/faults?status=active&limit={limit}")
            except (StackError, HttpError):  # an API replica busy: look again
                await asyncio.sleep(POLL)
                continue
            self._active = {f["hostname"] for f in faults}
            for host, (active, done) in list(self._waiting.items()):
                if (host in self._active) == active and not done.done():
                    done.set_result(None)
            await asyncio.sleep(POLL)

    async def _cycle(self, host: str) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            active = host not in self._active  # the next event turns it over
            status = "down" if active else "up"
            done = asyncio.get_running_loop().create_future()
            self._waiting[host] = (active, done)
            await self.put([self.event(host, status, time.time(), f"cycle-{host}-{n}-{status}")])
            try:
                await asyncio.wait_for(done, LOST_AFTER)
            except TimeoutError:
                self.lost += 1
            else:
                self.handled.append(time.monotonic())
            finally:
                self._waiting.pop(host, None)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._poll(), name="cycling-poll")]
        self._tasks += [asyncio.create_task(self._cycle(h), name=f"cycle-{h}") for h in self.hosts]

    async def stop(self) -> None:
        """No new events; those sent are waited for (or counted lost)."""
        self._stop.set()
        cycles = self._tasks[1:]
        await asyncio.gather(*cycles, return_exceptions=True)
        self._tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._tasks[0]

    def rate(self, start: float, end: float) -> dict[str, float]:
        n = sum(start <= t < end for t in self.handled)
        seconds = max(end - start, 1e-9)
        return {"events": n, "seconds": seconds, "per_s": n / seconds}


async def _consuming(s: Stack, url: str) -> dict[str, Any]:
    resp = await s.http.get(url + "/health", timeout=2.0)
    body: dict[str, Any] = resp.json() if resp.ok else {}
    consuming: dict[str, Any] = body.get("consuming", {})
    return consuming


async def kill_restart(
    s: Stack,
    hosts: list[str],
    role: str,
    window: float,
    put: PutEvents,
    event: HostEvent,
) -> dict[str, Any]:
    """The three windows around a kill and restart of `{role}-0` (see the module)."""
    cluster = s.service
    if not isinstance(cluster, Cluster):
        raise StackError("--kill-restart needs a mode with replicas (split-2)")
    victim = f"{role}-0"
    survivors = [m.name for m in cluster.members.values() if m.role == role and m.name != victim]
    own = {
        t: parts["own"] for t, parts in (await _consuming(s, cluster.members[victim].url)).items()
    }
    cycling = Cycling(s, hosts, put, event)
    cycling.start()
    try:
        t0 = time.monotonic() + WARM_UP
        await asyncio.sleep(WARM_UP + window)
        killed = time.monotonic()
        cluster.kill(victim)
        await asyncio.sleep(window)
        restarting = time.monotonic()
        await cluster.restart(victim)
        ready = time.monotonic()

        async def back() -> bool:
            mine = await _consuming(s, cluster.members[victim].url)
            if any(mine.get(t, {}).get("own") != parts for t, parts in own.items()):
                return False
            for name in survivors:
                theirs = await _consuming(s, cluster.members[name].url)
                if any(theirs.get(t, {}).get("taken_over") for t in own):
                    return False
            return True

        await wait_for(f"{victim}'s partitions to come back", back, 60, 0.05)
        returned = time.monotonic()
        await asyncio.sleep(window)
        ended = time.monotonic()
    finally:
        await cycling.stop()
    return {
        "role": role,
        "victim": victim,
        "hosts": len(hosts),
        "windows": {
            "before": cycling.rate(t0, killed),
            "down": cycling.rate(killed, restarting),
            "restarting": cycling.rate(restarting, returned),
            "after": cycling.rate(returned, ended),
        },
        "restart_seconds": ready - restarting,
        "back_after_seconds": returned - ready,
        "lost": cycling.lost,
    }


def print_kill_restart(console: Console, result: dict[str, Any]) -> None:
    for name, r in result["modes"].items():
        k = r.get("kill_restart")
        if not k:
            continue
        w = k["windows"]
        table = Table(
            title=f"{name}: {k['victim']} killed and restarted while {k['hosts']} hosts cycle "
            "up/down, one event each at a time"
        )
        for col in ("window", "events handled", "seconds", "events/s", "vs before"):
            table.add_column(col, justify="left" if col == "window" else "right")
        base = w["before"]["per_s"] or None
        labels = {
            "before": "before the kill",
            "down": f"{k['victim']} down",
            "restarting": "restart until partitions back",
            "after": "after the partitions came back",
        }
        for key, label in labels.items():
            x = w[key]
            ratio = f"{x['per_s'] / base:.2f}x" if base else "—"
            table.add_row(
                label, str(x["events"]), f"{x['seconds']:.1f}", f"{x['per_s']:.1f}", ratio
            )
        console.print(table)
        console.print(
            f"{name}: {k['victim']} answered {k['restart_seconds']:.1f} s after its restart; "
            f"its partitions came back {k['back_after_seconds']:.2f} s after that; "
            f"events never seen handled: {k['lost']}"
        )
