"""`opendoctor bench groups`: server-group messaging on the lab, measured.

- **Broadcast**: a member of a group of 10 (then 100) peers sends a datagram through its
  guest agent's application socket; the time until every peer's agent handed it to the
  application listening on its own socket (guest → agent → host → service → hosts →
  agents → applications). Beside it, in the same run, the **floor**: the same fan-out of
  the same payload over plain Unix sockets from one process (one write per peer, one
  reader per peer), what moving the bytes costs without anything in between.
- **Peer state after a VM failure**: a member's VM process is killed (SIGKILL, T00); the
  time until every peer's application got `peer-state` `failed` for it (the host sees
  the exit, tells the service, which tells the peers' hosts).

The peers are spread over the lab's hosts. The receiving side is `Receiver`: one
connection to an agent's application socket, lines in, arrival times noted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from opendoctor.lab.manager.hostctl import HostProc
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.bench import summary
from opendoctor.tools.stack import Stack, running_stack, wait_for

PROJECT = "project-a"
PAYLOAD_BYTES = 1000
# No host prober: a hundred VMs started at once on two shared cores can make a host miss
# its probes, and the host fenced (its VMs with it) is not what is measured here. A
# killed VM is reported by its host, which the prober has no part in.
QUIET = {"OPENDOCTOR_MONITOR__ENABLED": "false"}


def payload(tag: str) -> str:
    """A payload of `PAYLOAD_BYTES` that names its send (the agent gives each send an id
    of its own on the channel: the peers know a message by what it says)."""
    return tag + "." * (PAYLOAD_BYTES - len(tag))


MAX_LINE = 64 * 1024


class Receiver:
    """An application on a VM's agent socket: every line it gets, with when it came."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, changed: asyncio.Event
    ) -> None:
        self.reader, self.writer = reader, writer
        self.got: list[tuple[float, float, dict[str, Any]]] = []  # (perf, wall, line)
        self.changed = changed  # shared by the receivers of one measurement
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, path: str, changed: asyncio.Event) -> Receiver:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE)
        return cls(reader, writer, changed)

    async def _read(self) -> None:
        while line := await self.reader.readline():
            self.got.append((time.perf_counter(), time.time(), json.loads(line)))
            self.changed.set()

    def send(self, payload: str, group: str | None, msg_id: str) -> None:
        self.write({"type": "send", "payload": payload, "group": group, "msg_id": msg_id})

    def write(self, line: dict[str, Any]) -> None:
        self.writer.write(json.dumps(line).encode() + b"\n")

    def find(self, match: Callable[[dict[str, Any]], bool]) -> tuple[float, float] | None:
        return next(((p, w) for p, w, line in self.got if match(line)), None)

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()
        await asyncio.gather(self._task, return_exceptions=True)


async def all_found(
    receivers: list[Receiver], match: Callable[[dict[str, Any]], bool], timeout: float
) -> list[tuple[float, float]]:
    """When each receiver got a line that matches; TimeoutError past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r.find(match) for r in receivers]
        if all(f is not None for f in found):
            return [f for f in found if f is not None]
        left = deadline - time.monotonic()
        if left <= 0:
            missing = sum(f is None for f in found)
            raise TimeoutError(f"{missing} of {len(receivers)} peers got nothing")
        changed = receivers[0].changed
        changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), left)


# --- the lab ---------------------------------------------------------------------------------


async def make_group(s: Stack, name: str, members: int, hosts: int) -> tuple[str, list[str]]:
    """A group of `members` servers spread over the hosts; its id, the servers' ids."""
    lab = s.lab.client
    group = await lab.create_server_group(name, PROJECT)
    limit = asyncio.Semaphore(8)

    async def make(i: int) -> str:
        async with limit:
            host = f"compute{i % hosts + 1}"
            server = await lab.create_server(f"{name}-{i}", PROJECT, host=host, group=group.id)
            return server.id

    ids = list(await asyncio.gather(*(make(i) for i in range(members))))
    return group.id, ids


async def _app_socket(s: Stack, server_id: str) -> str:
    """Where the server's agent listens for applications, as its host tells (the lab's
    server records do not say)."""
    lab = s.lab.client
    host = await lab.host((await lab.server(server_id)).host)
    spec = s.lab.spec
    proc = HostProc(host.name, host.address, spec.heartbeat_port, spec.control_port, spec.vm_mode)
    for vm in await proc.vms():
        if vm["instance_id"] == server_id and vm.get("app_socket"):
            return str(vm["app_socket"])
    raise RuntimeError(f"server {server_id} has no application socket (guest heartbeats off?)")


async def open_receivers(s: Stack, ids: list[str]) -> list[Receiver]:
    changed = asyncio.Event()

    async def one(server_id: str) -> Receiver:
        path = await _app_socket(s, server_id)
        await wait_for(f"the agent socket of {server_id}", _exists(path), 30)
        return await Receiver.open(path, changed)

    return list(await asyncio.gather(*(one(i) for i in ids)))


def _exists(path: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await asyncio.to_thread(os.path.exists, path)

    return check


def message(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("type") == "message" and line.get("payload") == text


async def _send_and_time(
    sender: Receiver, peers: list[Receiver], group: str, timeout: float
) -> float:
    msg_id = uuid.uuid4().hex
    started = time.perf_counter()
    text = payload(msg_id)
    sender.send(text, group, msg_id)
    arrivals = await all_found(peers, message(text), timeout)
    return max(p for p, _ in arrivals) - started


async def until_routed(sender: Receiver, peers: list[Receiver], group: str) -> None:
    """The service knows the group and every host is connected: a send reaches all."""
    deadline = time.monotonic() + 60
    while True:
        try:
            await _send_and_time(sender, peers, group, 2.0)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def broadcast(s: Stack, peers: int, runs: int, hosts: int, floor_dir: Path) -> dict[str, Any]:
    group, ids = await make_group(s, f"bc{peers}", peers + 1, hosts)
    receivers = await open_receivers(s, ids)
    sender, others = receivers[0], receivers[1:]
    try:
        await until_routed(sender, others, group)
        ours: list[float] = []
        floor: list[float] = []
        async with UnixFanOut(floor_dir, peers) as fan:
            for _ in range(runs):
                ours.append(await _send_and_time(sender, others, group, 10.0))
                floor.append(await fan.once(payload(uuid.uuid4().hex)))
    finally:
        await asyncio.gather(*(r.close() for r in receivers))
    return {
        "peers": peers,
        "hosts": hosts,
        "payload_bytes": PAYLOAD_BYTES,
        "runs": runs,
        "broadcast_ms": _ms(ours),
        "floor_ms": _ms(floor),
    }


async def peer_failure(s: Stack, peers: int, runs: int, hosts: int) -> dict[str, Any]:
    """Kill one member per run (a fresh group each time) and time `failed` at every peer."""
    took: list[float] = []
    for run in range(runs):
        group, ids = await make_group(s, f"pf{run}", peers + 1, hosts)
        receivers = await open_receivers(s, ids)
        victim, others = ids[0], receivers[1:]
        try:
            await until_routed(others[0], [*others[1:], receivers[0]], group)
            t00 = float((await s.lab.client.kill_server(victim))["t00"])

            def failed(line: dict[str, Any], victim: str = victim) -> bool:
                return (
                    line.get("type") == "peer-state"
                    and line.get("peer") == victim
                    and line.get("state") == "failed"
                )

            arrivals = await all_found(others, failed, 30.0)
            took.append(max(w for _, w in arrivals) - t00)
        finally:
            await asyncio.gather(*(r.close() for r in receivers))
            # Each run's VMs go: a run's processes must not slow the next.
            await asyncio.gather(*(s.lab.client.delete_server(i) for i in ids))
    return {"peers": peers, "runs": runs, "failed_ms": _ms(took)}


def _ms(values: list[float]) -> dict[str, float]:
    return {k: round(v * 1000, 2) for k, v in summary(values).items()}


# --- the floor -------------------------------------------------------------------------------


class UnixFanOut:
    """The floor: one process writes a line to each of `n` Unix sockets; each has a
    reader; the time until the last got it."""

    def __init__(self, directory: Path, n: int) -> None:
        self.path = str(directory / f"floor-{uuid.uuid4().hex[:8]}.sock")
        self.n = n
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._got: list[asyncio.Queue[float]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> UnixFanOut:
        accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

        async def on_client(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accepted.put(writer)

        self._server = await asyncio.start_unix_server(on_client, self.path)
        for _ in range(self.n):
            reader, client = await asyncio.open_unix_connection(self.path, limit=MAX_LINE)
            self._clients.append(client)
            queue: asyncio.Queue[float] = asyncio.Queue()
            self._got.append(queue)
            self._tasks.append(asyncio.create_task(_note_lines(reader, queue)))
            self._writers.append(await accepted.get())
        return self

    async def once(self, payload: str) -> float:
        line = json.dumps({"type": "message", "payload": payload}).encode() + b"\n"
        started = time.perf_counter()
        for writer in self._writers:
            writer.write(line)
        arrivals = await asyncio.gather(*(q.get() for q in self._got))
        return max(arrivals) - started

    async def __aexit__(self, *_: object) -> None:
        for writer in [*self._writers, *self._clients]:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(Path(self.path).unlink, missing_ok=True)


async def _note_lines(reader: asyncio.StreamReader, queue: asyncio.Queue[float]) -> None:
    while await reader.readline():
        queue.put_nowait(time.perf_counter())


# --- the benchmark ---------------------------------------------------------------------------


async def run(
    sizes: list[int],
    runs: int,
    failure_runs: int,
    failure_peers: int,
    hosts: int,
    console: Console,
    workdir: Path | None = None,
) -> dict[str, Any]:
    spec = LabSpec(hosts=hosts, vms=0, projects=[PROJECT], ip_prefix="127.83", vm_mode="inline")
    with tempfile.TemporaryDirectory(prefix="od-bench-groups-") as tmp:
        base = workdir or Path(tmp)
        # AF_UNIX paths are short: the floor's sockets go in a short directory of their own.
        floor_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="odf-", dir="/tmp"))
        try:
            async with running_stack(spec, base / "stack", QUIET) as s:
                results = []
                for peers in sizes:
                    console.print(f"broadcast to {peers} peers, {runs} runs")
                    results.append(await broadcast(s, peers, runs, hosts, floor_dir))
        finally:
            await asyncio.to_thread(floor_dir.rmdir)
        failure = None
        if failure_runs:
            # Process VMs: a killed VM is a process that exits, as the host sees it.
            spec = LabSpec(hosts=hosts, vms=0, projects=[PROJECT], ip_prefix="127.84")
            async with running_stack(spec, base / "failure", QUIET) as s:
                console.print(f"peer state after a VM failure, {failure_runs} runs")
                failure = await peer_failure(s, failure_peers, failure_runs, hosts)
    return {"broadcast": results, "peer_failure": failure}


def print_groups(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="server-group broadcast: guest send → every peer's application (ms)")
    cols = ("peers", "hosts", "runs", "p50", "p90", "p99", "floor p50", "floor p99", "p50 ÷ floor")
    for col in cols:
        table.add_column(col, justify="right")
    for r in result["broadcast"]:
        ours, floor = r["broadcast_ms"], r["floor_ms"]
        table.add_row(
            str(r["peers"]),
            str(r["hosts"]),
            str(r["runs"]),
            *(f"{ours[k]:.2f}" for k in ("p50", "p90", "p99")),
            f"{floor['p50']:.2f}",
            f"{floor['p99']:.2f}",
            f"{ours['p50'] / floor['p50']:.1f}x" if floor["p50"] > 0 else "-",
        )
    console.print(table)
    failure = result["peer_failure"]
    if failure is not None:
        f = failure["failed_ms"]
        console.print(
            f"peer state after a VM failure (SIGKILL → `failed` at all {failure['peers']} "
            f"peers, {failure['runs']} runs): p50 {f['p50']:.1f} ms, p90 {f['p90']:.1f} ms, "
            f"p99 {f['p99']:.1f} ms"
        )
