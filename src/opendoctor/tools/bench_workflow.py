"""`opendoctor bench workflow`: the workflow engine embedded, measured beside Mistral.

One process: the engine on a fresh SQLite file in a temp dir (or `--database-url`),
`std.http` through a client built as the service's callbacks client (the notifiers'
egress policy, allowing only the bench's receiver on loopback), the receiver an aiohttp
server on the same event loop. Measured, in order:

1. start → first action: `Workflows.start` called → the receiver has the `std.http`
   GET, sequential one-task executions; and a one-task `std.noop` start → SUCCESS.
2. a 5-task `std.noop` chain, start → SUCCESS stored, sequential.
3. that chain `--executions` times, all started at once: wall time until the last is
   stored SUCCESS, tasks/s, memory, group commits.
4. a `with-items` task over 100 items, concurrency 10, start → SUCCESS.
5. `kill -9` of an engine process halfway through 100 chains of POSTs, and its
   successor's recovery (`bench_workflow_crash`).

"Ended" is when the engine has the execution's final state committed: `Run.end` runs
after the commit that holds it. Beside each figure: Mistral 23.0.0 (API, engine and
executor on RabbitMQ and PostgreSQL, logging at WARNING) measured on this machine, as
issue 16 reports it, and the goal.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from opendoctor.core.workflow_settings import WorkflowSettings
from opendoctor.store.db import Database, ensure_database
from opendoctor.tools.bench import summary
from opendoctor.tools.bench_graph import rss_bytes
from opendoctor.tools.bench_workflow_child import (
    PROJECT,
    build_engine,
    callbacks_client,
    chain_text,
    put,
)
from opendoctor.tools.bench_workflow_crash import BenchError, Receiver, crash
from opendoctor.workflow.engine import Engine
from opendoctor.workflow.run import Run
from opendoctor.workflow.service import Workflows

__all__ = ["BenchError", "Options", "measure", "problems"]

CHAIN = 5  # tasks in the chain, as in Mistral's measurement
# Mistral 23.0.0 on this machine (issue 16), seconds; the chain's p50 ranged over runs.
MISTRAL_CHAIN_P50 = (0.42, 0.48)
MISTRAL = {
    "first_action_p50": 0.100,
    "first_action_p99": 0.139,
    "executions_1000_s": 475.0,
    "executions_tasks_per_s": 1000 * CHAIN / 475.0,
    "with_items_s": 16.4,
}
GOALS = {"first_action_p99": 0.005, "executions_1000_s": 10.0, "with_items_s": 0.5}

WORKFLOWS = (
    """\
version: '2.0'
bench_http:
  input: [url]
  tasks:
    call:
      action: std.http url=<% $.url %>
bench_noop:
  tasks:
    one:
      action: std.noop
bench_items:
  input: [items]
  tasks:
    each:
      with-items: i in <% $.items %>
      concurrency: CONCURRENCY
      action: std.echo output=<% $.i %>
""",
    chain_text("bench_chain", CHAIN, "      action: std.noop"),
)


@dataclass(frozen=True, slots=True)
class Options:
    runs: int = 200
    executions: int = 1000
    items: int = 100
    concurrency: int = 10
    item_runs: int = 5
    warmup: int = 3
    crash_executions: int = 100
    crash: bool = True
    database_url: str | None = None

    @classmethod
    def quick(cls, database_url: str | None = None, crash: bool = True) -> Options:
        return cls(runs=20, executions=200, item_runs=2, database_url=database_url, crash=crash)


class TimedEngine(Engine):
    """An engine that tells when each execution ended, final state committed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ends: dict[str, asyncio.Future[tuple[float, str]]] = {}

    def ended(self, run: Run) -> None:
        at = time.perf_counter()
        super().ended(run)
        e = run.execution
        found = self._ends.setdefault(e.id, asyncio.get_running_loop().create_future())
        if not found.done():
            found.set_result((at, e.state))

    async def until_ended(self, execution_id: str) -> tuple[float, str]:
        found = self._ends.setdefault(execution_id, asyncio.get_running_loop().create_future())
        try:
            return await found
        finally:
            self._ends.pop(execution_id, None)


class Embedded:
    """The engine in this process, its workflows stored, and the receiver."""

    def __init__(
        self, engine: TimedEngine, workflows: Workflows, receiver: Receiver, opts: Options
    ) -> None:
        self.engine = engine
        self.workflows = workflows
        self.receiver = receiver
        self.opts = opts
        self.states: Counter[str] = Counter()

    async def start(self, name: str, given: dict[str, Any] | None = None) -> str:
        return (await self.workflows.start(name, given or {}, PROJECT)).id

    async def ended(self, execution_id: str) -> float:
        at, state = await self.engine.until_ended(execution_id)
        self.states[state] += 1
        return at

    async def repeat(self, n: int, one: Callable[[], Awaitable[float]]) -> list[float]:
        for _ in range(self.opts.warmup):
            await one()
        return [await one() for _ in range(n)]

    async def first_action(self) -> float:
        arrived = self.receiver.expect()
        t0 = time.perf_counter()
        execution = await self.start("bench_http", {"url": self.receiver.url("/first")})
        latency = await arrived - t0
        await self.ended(execution)
        return latency

    def until_success(
        self, name: str, given: dict[str, Any] | None = None
    ) -> Callable[[], Awaitable[float]]:
        async def one() -> float:
            t0 = time.perf_counter()
            return await self.ended(await self.start(name, given)) - t0

        return one

    async def at_once(self, n: int) -> dict[str, Any]:
        commits, records = self.engine.commit.commits, self.engine.commit.records
        rss_before, peak_before = rss_bytes(), _peak_rss()
        t0 = time.perf_counter()
        ids = await asyncio.gather(*(self.start("bench_chain") for _ in range(n)))
        accepted = time.perf_counter() - t0
        ends = await asyncio.gather(*(self.ended(i) for i in ids))
        wall = max(ends) - t0
        commits = self.engine.commit.commits - commits
        records = self.engine.commit.records - records
        return {
            "executions": n,
            "tasks": n * CHAIN,
            "all_started_s": accepted,
            "wall_s": wall,
            "tasks_per_s": n * CHAIN / wall,
            "executions_per_s": n / wall,
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_bytes(),
            "rss_growth_bytes": rss_bytes() - rss_before,
            "peak_rss_before_bytes": peak_before,
            "peak_rss_bytes": _peak_rss(),
            "group_commits": commits,
            "records_written": records,
            "records_per_commit": records / commits if commits else 0.0,
        }


def _peak_rss() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


def _database_label(url: str) -> str:
    parsed = make_url(url)
    return parsed.render_as_string(hide_password=True)


async def measure(
    opts: Options, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Every figure of the bench, with the configuration that produced it."""
    with tempfile.TemporaryDirectory(prefix="opendoctor-bench-workflow-") as tmp:
        workdir = Path(tmp)
        url = opts.database_url or f"sqlite+aiosqlite:///{workdir}/bench.db"
        receiver = Receiver()
        await receiver.start()
        try:
            result = await _embedded(opts, url, receiver, progress)
            if opts.crash:
                progress(f"kill -9 of an engine running {opts.crash_executions} executions")
                result["crash"] = await _crash(opts, workdir, receiver)
        finally:
            await receiver.close()
    return result


async def _embedded(
    opts: Options, url: str, receiver: Receiver, progress: Callable[[str], None]
) -> dict[str, Any]:
    if url.startswith("postgresql"):
        await ensure_database(url)
    db = Database(url)
    await db.migrate()
    http = callbacks_client([receiver.allow])
    settings = WorkflowSettings(builtin=False)  # the shipped workflows are not run here
    engine, workflows = build_engine(db, http, settings, TimedEngine)
    bench = Embedded(engine, workflows, receiver, opts)
    try:
        for text in WORKFLOWS:
            await put(workflows, text.replace("CONCURRENCY", str(opts.concurrency)))
        await engine.start()
        progress(f"start → first action, {opts.runs} runs")
        first = await bench.repeat(opts.runs, bench.first_action)
        noop = await bench.repeat(opts.runs, bench.until_success("bench_noop"))
        progress(f"{CHAIN}-task chain, {opts.runs} runs")
        chain = await bench.repeat(opts.runs, bench.until_success("bench_chain"))
        progress(f"{opts.executions} executions at once")
        at_once = await bench.at_once(opts.executions)
        progress(f"with-items over {opts.items} items, {opts.item_runs} runs")
        items = {"items": list(range(opts.items))}
        with_items = await bench.repeat(opts.item_runs, bench.until_success("bench_items", items))
    finally:
        await engine.stop()
        await http.close()
        await db.close()
    return {
        "config": _config(opts, url, receiver, settings, engine),
        "first_action": summary(first),
        "noop_task": summary(noop),
        "chain": summary(chain),
        "at_once": at_once,
        "with_items": summary(with_items) | {"runs": with_items},
        # Every execution the bench waited for, warm-ups included, by final state.
        "states": dict(bench.states),
    }


def _config(
    opts: Options, url: str, receiver: Receiver, settings: WorkflowSettings, engine: Engine
) -> dict[str, Any]:
    return {
        "options": asdict(opts),
        "database": _database_label(url),
        "database_kind": make_url(url).get_backend_name(),
        "single_process": engine.single_process,
        "engine_settings": settings.model_dump(),
        "http": f"std.http through the callbacks client, egress allowing {receiver.allow} only",
        "receiver": "aiohttp on 127.0.0.1, same process and event loop as the engine",
        "chain_tasks": CHAIN,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


async def _crash(opts: Options, workdir: Path, receiver: Receiver) -> list[dict[str, Any]]:
    """The kill -9, with the tasks as they are by default (a POST interrupted is not made
    again), then marked `safe-rerun` (it is made again, with the same action id)."""
    out = []
    for safe in (False, True):
        if opts.database_url is None:
            url = f"sqlite+aiosqlite:///{workdir}/crash-{'safe' if safe else 'unsafe'}.db"
            await _migrated(url)
            # One process owns a SQLite file: the new engine takes everything at start.
            timing: tuple[float, float] = (10.0, 2.0)
        else:
            # The new engine waits for the dead one's lease to lapse: a short one.
            url, timing = opts.database_url, (2.0, 0.2)
        out.append(await crash(url, receiver, workdir, opts.crash_executions, CHAIN, safe, *timing))
    return out


async def _migrated(url: str) -> None:
    db = Database(url)
    try:
        await db.migrate()
    finally:
        await db.close()


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """How many times faster than Mistral: its figure over ours (throughput: ours over
    its). The chain against the fastest of Mistral's p50s."""
    return {
        "first_action_p50": MISTRAL["first_action_p50"] / result["first_action"]["p50"],
        "first_action_p99": MISTRAL["first_action_p99"] / result["first_action"]["p99"],
        "chain_p50": MISTRAL_CHAIN_P50[0] / result["chain"]["p50"],
        "tasks_per_s": result["at_once"]["tasks_per_s"] / MISTRAL["executions_tasks_per_s"],
        "with_items": MISTRAL["with_items_s"] / result["with_items"]["p50"],
    }


def goals(result: dict[str, Any]) -> dict[str, bool]:
    # The 1,000-execution goal as a rate, so that a --quick run of fewer is judged too.
    rate = 1000 * CHAIN / GOALS["executions_1000_s"]
    return {
        "first_action_p99": result["first_action"]["p99"] <= GOALS["first_action_p99"],
        "tasks_per_s": result["at_once"]["tasks_per_s"] >= rate,
        "with_items": result["with_items"]["max"] <= GOALS["with_items_s"],
    }


def problems(result: dict[str, Any]) -> list[str]:
    """What makes the run a failure: an execution that did not succeed, or, after the
    kill, one lost or a finished call made twice."""
    out = []
    failed = {s: n for s, n in result["states"].items() if s != "SUCCESS"}
    if failed:
        out.append(f"executions that did not succeed: {failed}")
    for c in result.get("crash", []):
        what = f"after kill -9 (safe-rerun {str(c['safe_rerun']).lower()})"
        if c["lost"]:
            out.append(f"{what}: {c['lost']} of {c['executions']} executions lost")
        if c["done_at_kill_called_again"]:
            out.append(f"{what}: {c['done_at_kill_called_again']} finished tasks called again")
        if not c["safe_rerun"] and c["action_ids_called_twice"]:
            out.append(f"{what}: {c['action_ids_called_twice']} unsafe calls made twice")
        if c["safe_rerun"] and c["success"] != c["executions"]:
            out.append(f"{what}: {c['executions'] - c['success']} executions did not succeed")
    return out
