"""The engine process that `opendoctor bench workflow` kills with SIGKILL, and what every
part of that bench builds an engine from.

Run as `python -m opendoctor.tools.bench_workflow_child`: it runs a workflow engine on
the database it is given, optionally adds the crash workflow and starts executions of
it, prints one JSON line per milestone on stdout (`{"up": t}` once imported, `{"ready":
t}` once its engine has started and taken over what it found, `{"started": [ids]}` once
every start is stored; t is the wall clock),
and runs until SIGTERM (a clean stop) or SIGKILL (the crash being measured).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import Any, TypeVar

import orjson

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.settings import NotifierSettings
from opendoctor.core.workflow_settings import WorkflowSettings
from opendoctor.infra.httpclient import HttpClient
from opendoctor.store.db import Database
from opendoctor.store.leases import LeaseStore
from opendoctor.store.workflows import DefinitionExists, WorkflowStore
from opendoctor.workflow.actions import Toolbox, builtin_actions
from opendoctor.workflow.engine import Engine
from opendoctor.workflow.service import Workflows

PROJECT = "bench"
CRASH_WORKFLOW = "bench_crash_chain"

E = TypeVar("E", bound=Engine)


def callbacks_client(allow: list[str]) -> HttpClient:
    """An HTTP client built as the service's callbacks client is (`app.service`): the
    notifier's timeout, pool and answer limit, and its egress policy, here allowing
    only `allow` (the bench's own receiver on loopback, which the policy refuses by
    default)."""
    notifier = NotifierSettings(egress_allow=allow)
    return HttpClient(
        timeout=notifier.timeout,
        connections=notifier.connections,
        egress=notifier.egress(),
        max_response_bytes=notifier.max_response_bytes,
    )


def build_engine(
    db: Database, http: HttpClient, settings: WorkflowSettings, kind: type[E]
) -> tuple[E, Workflows]:
    """An engine with the built-in actions as the app wires them (`app.workflows`),
    without a VIM to act on: the bench calls only `std.*` actions."""
    store = WorkflowStore(db)
    engine = kind(
        store,
        LeaseStore(db),
        builtin_actions(Toolbox(vim=MemoryVim([], []), http=http)),
        settings,
        single_process=db.engine.dialect.name == "sqlite",
    )
    return engine, Workflows(store, engine)


async def put(workflows: Workflows, text: str) -> None:
    """Store the bench's workflows, replacing those of an earlier run on the database."""
    try:
        await workflows.add(text, PROJECT)
    except DefinitionExists:
        await workflows.update(text, PROJECT)


def chain_text(name: str, tasks: int, body: str, header: str = "") -> str:
    """A direct workflow of `tasks` tasks one after the other; `body` is each task's
    definition (its `action:` and `input:` lines, indented for a task)."""
    lines = ["version: '2.0'", f"{name}:", *([header] if header else []), "  tasks:"]
    for i in range(1, tasks + 1):
        lines += [f"    t{i}:", body.rstrip("\n")]
        if i < tasks:
            lines.append(f"      on-success: [t{i + 1}]")
    return "\n".join(lines) + "\n"


# Each call names its execution and task in its body, so that the receiver can tell a
# task run twice from two tasks. A POST is not safe to repeat: without `safe-rerun` a
# call interrupted by a crash is not made again.
CRASH_TASK = """\
      action: std.http
      safe-rerun: SAFE
      input:
        url: <% $.url %>
        method: POST
        json:
          execution: <% execution().id %>
          task: <% task().name %>
"""


def crash_text(tasks: int, safe_rerun: bool) -> str:
    body = CRASH_TASK.replace("SAFE", "true" if safe_rerun else "false")
    return chain_text(CRASH_WORKFLOW, tasks, body, "  input: [url]")


def _say(**what: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(what) + b"\n")
    sys.stdout.flush()


async def child(args: argparse.Namespace) -> None:
    _say(up=time.time())
    db = Database(args.database_url)
    http = callbacks_client(args.allow)
    settings = WorkflowSettings(
        engine_ttl=args.engine_ttl, takeover_interval=args.takeover_interval, builtin=False
    )
    engine, workflows = build_engine(db, http, settings, Engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        if args.start:
            await put(workflows, crash_text(args.tasks, args.safe_rerun))
        unfinished = len(await engine.store.unfinished(None))
        await engine.start()
        _say(ready=time.time(), unfinished=unfinished)
        if args.start:
            started = await asyncio.gather(
                *(
                    workflows.start(CRASH_WORKFLOW, {"url": args.url}, PROJECT)
                    for _ in range(args.start)
                )
            )
            _say(started=[e.id for e in started])
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await engine.stop()
        await http.close()
        await db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--url", required=True, help="the receiver the tasks POST to")
    parser.add_argument("--allow", action="append", default=[], help="egress allow entry")
    parser.add_argument("--start", type=int, default=0, help="executions to start")
    parser.add_argument("--tasks", type=int, default=5, help="tasks in the chain")
    parser.add_argument("--safe-rerun", action="store_true", help="mark the tasks safe-rerun")
    parser.add_argument("--engine-ttl", type=float, default=10.0)
    parser.add_argument("--takeover-interval", type=float, default=2.0)
    asyncio.run(child(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
