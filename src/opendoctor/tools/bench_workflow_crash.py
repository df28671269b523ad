"""The receiver the workflow bench's `std.http` tasks call, and the `kill -9` part.

The crash: an engine process (`bench_workflow_child`) starts executions of a chain of
POSTs to the receiver; when about half of all calls have arrived it is killed with
SIGKILL and a new one starts on the same database. On SQLite it takes every unfinished
execution over at start; on PostgreSQL once the dead engine's lease has lapsed. The
receiver's log of calls (execution, task, the `X-Opendoctor-Action-Execution` header)
against the stored tasks tells what ran twice.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from sqlalchemy import select

from opendoctor.core.workflows import FINISHED
from opendoctor.store.db import Database
from opendoctor.store.workflow_runs import EXECUTIONS, TASKS
from opendoctor.workflow.std_actions import ACTION_HEADER

CHILD = "opendoctor.tools.bench_workflow_child"
POLL = 0.01  # seconds between reads of the store while waiting for the executions to end


class BenchError(Exception):
    """The bench could not measure what it set out to (a child died, nothing ended)."""


@dataclass(frozen=True, slots=True)
class Call:
    execution: str
    task: str
    action: str


@dataclass(slots=True)
class Receiver:
    """The bench's HTTP server, on loopback. `GET /first` notes when each request
    arrives (the first action of an execution); `POST /call` logs who called and
    answers after `delay`, as a service that does some work would."""

    delay: float = 0.02
    calls: list[Call] = field(default_factory=list)
    _arrival: asyncio.Future[float] | None = None
    _threshold: tuple[int, asyncio.Event] | None = None
    _runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/first", self._first)
        app.router.add_post("/call", self._call)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def allow(self) -> str:
        """The egress allow entry for this receiver, and nothing else on loopback."""
        return f"127.0.0.1:{self.port}"

    def expect(self) -> asyncio.Future[float]:
        """A future of when the next `GET /first` arrives (`time.perf_counter`)."""
        self._arrival = asyncio.get_running_loop().create_future()
        return self._arrival

    def when_calls(self, n: int) -> asyncio.Event:
        event = asyncio.Event()
        self._threshold = (n, event)
        if len(self.calls) >= n:
            event.set()
        return event

    async def _first(self, request: web.Request) -> web.Response:
        at = time.perf_counter()
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(at)
        return web.json_response({"ok": True})

    async def _call(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.calls.append(
            Call(str(body["execution"]), str(body["task"]), request.headers[ACTION_HEADER])
        )
        if self._threshold is not None and len(self.calls) >= self._threshold[0]:
            self._threshold[1].set()
        await asyncio.sleep(self.delay)
        return web.json_response({"ok": True})


class Child:
    """One engine process; its stderr goes to a file, shown if it fails."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @classmethod
    async def spawn(cls, args: list[str], log: Path) -> Child:
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", CHILD, *args, stdout=asyncio.subprocess.PIPE, stderr=err
            )
        return cls(proc, log)

    async def said(self, key: str, timeout: float) -> dict[str, Any]:
        """The next line of its output that holds `key`."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while line := await self.proc.stdout.readline():
                found: dict[str, Any] = orjson.loads(line)
                if key in found:
                    return found
        raise BenchError(f"the engine process ended before it said {key!r}: {self.tail()}")

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-2000:] or "(no output on stderr)"

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _states(db: Database, ids: list[str]) -> dict[str, str]:
    query = select(EXECUTIONS.c.id, EXECUTIONS.c.state).where(EXECUTIONS.c.id.in_(ids))
    async with db.engine.connect() as conn:
        return {row.id: row.state for row in await conn.execute(query)}


async def _tasks(db: Database, ids: list[str]) -> list[Any]:
    c = TASKS.c
    query = select(c.execution_id, c.name, c.state, c.state_info).where(c.execution_id.in_(ids))
    async with db.engine.connect() as conn:
        return list(await conn.execute(query))


async def crash(
    database_url: str,
    receiver: Receiver,
    workdir: Path,
    executions: int = 100,
    tasks: int = 5,
    safe_rerun: bool = False,
    engine_ttl: float = 10.0,
    takeover_interval: float = 2.0,
) -> dict[str, Any]:
    """Start `executions` chains in an engine process, SIGKILL it when half the calls have
    arrived, start another on the same database and wait until every execution ended."""
    receiver.calls.clear()
    expected = executions * tasks
    common = [
        "--database-url", database_url,
        "--url", receiver.url("/call"),
        "--allow", receiver.allow,
        "--tasks", str(tasks),
        "--engine-ttl", str(engine_ttl),
        "--takeover-interval", str(takeover_interval),
        *(["--safe-rerun"] if safe_rerun else []),
    ]  # fmt: skip
    name = "safe" if safe_rerun else "unsafe"
    half = receiver.when_calls(expected // 2)
    first = await Child.spawn([*common, "--start", str(executions)], workdir / f"{name}-1.log")
    try:
        await first.said("ready", 60)
        ids: list[str] = (await first.said("started", 60))["started"]
        try:
            await asyncio.wait_for(half.wait(), 60)
        except TimeoutError:
            raise BenchError(
                f"only {len(receiver.calls)} of {expected} calls came in 60 s: {first.tail()}"
            ) from None
    finally:
        first.proc.kill()
        await first.proc.wait()
    calls_at_kill = len(receiver.calls)

    db = Database(database_url)
    try:
        # What the dead engine had stored as done: none of it may run again.
        done_at_kill = {
            (t.execution_id, t.name) for t in await _tasks(db, ids) if t.state == "SUCCESS"
        }
        calls_before = len(receiver.calls)
        spawned, restarted = time.time(), time.perf_counter()
        second = await Child.spawn(common, workdir / f"{name}-2.log")
        try:
            up = (await second.said("up", 60))["up"] - spawned
            said = await second.said("ready", 60)
            ready, unfinished = said["ready"] - spawned, said["unfinished"]
            states = await _wait_finished(db, ids, second, 60 + engine_ttl)
            finished = time.perf_counter() - restarted
            stored_tasks = await _tasks(db, ids)
        finally:
            await second.stop()
    finally:
        await db.close()
    again = receiver.calls[calls_before:]
    return {
        "safe_rerun": safe_rerun,
        "handler_delay_s": receiver.delay,
        "engine_ttl_s": engine_ttl,
        "takeover_interval_s": takeover_interval,
        "calls_at_kill": calls_at_kill,
        "tasks_done_at_kill": len(done_at_kill),
        "done_at_kill_called_again": sum((c.execution, c.task) in done_at_kill for c in again),
        "unfinished_at_restart": unfinished,
        "restart_to_process_up_s": up,
        "restart_to_engine_started_s": ready,
        "restart_to_all_finished_s": finished,
    } | _verdict(receiver.calls, ids, states, stored_tasks, executions, tasks)


async def _wait_finished(
    db: Database, ids: list[str], engine: Child, timeout: float
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        states = await _states(db, ids)
        if len(states) == len(ids) and all(s in FINISHED for s in states.values()):
            return states
        if engine.proc.returncode is not None:
            raise BenchError(f"the restarted engine died: {engine.tail()}")
        if time.monotonic() > deadline:
            left = len(ids) - sum(s in FINISHED for s in states.values())
            raise BenchError(f"{left} executions still unfinished: {engine.tail()}")
        await asyncio.sleep(POLL)


def _verdict(
    calls: list[Call],
    ids: list[str],
    states: dict[str, str],
    stored_tasks: list[Any],
    executions: int,
    tasks: int,
) -> dict[str, Any]:
    per_task = Counter((c.execution, c.task) for c in calls)
    per_action = Counter(c.action for c in calls)
    succeeded = [t for t in stored_tasks if t.state == "SUCCESS"]
    interrupted = [
        t for t in stored_tasks if t.state == "ERROR" and "interrupted" in (t.state_info or "")
    ]
    counted = Counter(states.values())
    return {
        "executions": executions,
        "tasks_per_execution": tasks,
        "calls_expected_without_crash": executions * tasks,
        "calls_total": len(calls),
        "started": len(ids),
        "success": counted["SUCCESS"],
        "error": counted["ERROR"],
        "other_finished": sum(n for s, n in counted.items() if s not in ("SUCCESS", "ERROR")),
        "lost": executions - sum(counted[s] for s in FINISHED),
        "successful_tasks": len(succeeded),
        "successful_tasks_called_twice": sum(
            per_task[(t.execution_id, t.name)] > 1 for t in succeeded
        ),
        "successful_tasks_never_called": sum(
            per_task[(t.execution_id, t.name)] == 0 for t in succeeded
        ),
        "tasks_called_twice": sum(n > 1 for n in per_task.values()),
        "action_ids_called_twice": sum(n > 1 for n in per_action.values()),
        "interrupted_tasks": len(interrupted),
        "interrupted_after_their_call_arrived": sum(
            per_task[(t.execution_id, t.name)] > 0 for t in interrupted
        ),
    }
