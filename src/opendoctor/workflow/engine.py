"""The engine: the executions this process runs, and taking over those of a dead one.

Each engine has a name and a lease in the database (`workflow-engine:<name>`) that it
renews; every execution it starts or takes over is stored with its name as `owner`.
When a lease lapses (the process died, or lost the database for longer than the lease),
any other engine claims that one's unfinished executions, one compare-and-set each, and
resumes them from their records: several processes share the work through the database,
with no scheduler of their own. On SQLite there is one process by construction (the
database is a file of its own), so the engine takes every unfinished execution at start
and a restart resumes at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from typing import Any

import orjson

from opendoctor.core.workflow_settings import WorkflowSettings
from opendoctor.core.workflows import FINISHED, Execution, TaskExecution, WorkflowDefinition
from opendoctor.infra import metrics
from opendoctor.infra.live import Hub
from opendoctor.infra.tasks import Background
from opendoctor.store.leases import LeaseStore
from opendoctor.store.workflows import Run as StoredRun
from opendoctor.store.workflows import WorkflowStore
from opendoctor.workflow.actions import ActionRegistry
from opendoctor.workflow.commit import GroupCommit
from opendoctor.workflow.expressions import ExpressionError, Scope, evaluate
from opendoctor.workflow.run import Run
from opendoctor.workflow.spec import REQUIRED, WorkflowSpec, parse

log = logging.getLogger(__name__)

LEASE_PREFIX = "workflow-engine:"
# How often an engine reads the states asked of its executions through other processes,
# and how long the asking process waits for it to take one.
REQUEST_POLL = 0.25
REQUEST_WAIT = 10.0
_SPEC_CACHE = 256


class InputError(ValueError):
    """An execution's input does not fit its workflow (missing, unexpected, too large)."""


class Busy(Exception):
    """This engine runs as many executions as it may (`workflow.max_running`)."""


class NotHere(Exception):
    """The execution is run by another engine that is alive."""


class Engine:
    def __init__(
        self,
        store: WorkflowStore,
        leases: LeaseStore,
        registry: ActionRegistry,
        settings: WorkflowSettings,
        single_process: bool,
        name: str | None = None,
        live: Hub | None = None,
    ) -> None:
        self.store = store
        self.leases = leases
        self.registry = registry
        self.settings = settings
        self.single_process = single_process
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.commit = GroupCommit(store)
        self.runs: dict[str, Run] = {}
        self._specs: OrderedDict[bytes, dict[str, WorkflowSpec]] = OrderedDict()
        self._background = Background()
        self.started = False
        # Executions started, paused, resumed and ended, as they happen (the dashboard).
        self.live = live if live is not None else Hub()

    # --- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.leases.acquire(self.lease, self.name, self.settings.engine_ttl)
        self.started = True
        await self.take_over(at_start=True)
        self._background.spawn(self._keep())
        self._background.spawn(self._follow_requests())

    async def stop(self) -> None:
        """Stop running (the executions stay as stored, ours, for the next start or for
        another engine once our lease is released)."""
        self.started = False
        await self._background.close()
        for run in list(self.runs.values()):
            for driver in list(run.drivers.values()):
                driver.cancel()
            await asyncio.gather(*run.drivers.values(), return_exceptions=True)
        await self.commit.close()
        await self.store.close_writer()
        self.runs.clear()
        try:
            await self.leases.release(self.lease, self.name)
        except Exception as exc:  # the lease lapses by itself
            log.warning("workflow engine lease not released", extra={"error": repr(exc)})

    @property
    def lease(self) -> str:
        return LEASE_PREFIX + self.name

    async def _keep(self) -> None:
        renew_every = self.settings.engine_ttl / 3
        last_renew = 0.0
        while True:
            await asyncio.sleep(min(renew_every, self.settings.takeover_interval))
            try:
                if time.monotonic() - last_renew >= renew_every:
                    await self.leases.acquire(self.lease, self.name, self.settings.engine_ttl)
                    last_renew = time.monotonic()
                await self.take_over()
            except Exception as exc:  # the database is back later; so are we
                log.warning("workflow engine could not look around", extra={"error": repr(exc)})

    async def _follow_requests(self) -> None:
        """Take the states other processes asked of our executions (pause, resume, ...)."""
        while True:
            await asyncio.sleep(REQUEST_POLL)
            try:
                for execution_id, state, info in await self.store.requests_for(self.name):
                    try:
                        await self.set_state(execution_id, state, info)
                    except (LookupError, ValueError, NotHere) as exc:
                        log.info(
                            "a workflow request was not taken",
                            extra={"execution": execution_id, "state": state, "error": str(exc)},
                        )
                    await self.store.drop_request(execution_id, state)
            except Exception as exc:  # the database is back later; so are the requests
                log.warning("workflow requests not read", extra={"error": repr(exc)})

    async def take_over(self, at_start: bool = False) -> list[str]:
        """Claim and resume executions nobody alive runs; returns their ids."""
        found = [e for e in await self.store.unfinished(None) if e.id not in self.runs]
        if not found:
            return []
        if self.single_process and at_start:
            dead = {e.owner for e in found}
        else:
            owners = {e.owner for e in found if e.owner and e.owner != self.name}
            alive = await self.leases.holders([LEASE_PREFIX + o for o in owners])
            dead = {e.owner for e in found if LEASE_PREFIX + str(e.owner) not in alive}
            dead.discard(self.name)
        by_owner: dict[str | None, list[str]] = {}
        for execution in found:
            if execution.owner in dead:
                by_owner.setdefault(execution.owner, []).append(execution.id)
        taken = []
        for owner, ids in by_owner.items():
            taken += await self.store.claim_many(ids, self.name, owner)
        # Read together, resumed together: their first writes share commits.
        stored = await self.store.runs(taken)
        await asyncio.gather(*(self._resume(stored[i]) for i in taken if i in stored))
        if taken:
            metrics.WORKFLOW_TAKEOVERS.inc(len(taken))
            metrics.WORKFLOW_RUNNING.set(len(self.runs))
            log.info("workflow executions taken over", extra={"count": len(taken)})
        return taken

    async def resume(self, execution_id: str) -> None:
        stored = await self.store.run(execution_id)
        if stored is not None:
            await self._resume(stored)

    async def _resume(self, stored: StoredRun) -> None:
        execution, tasks, actions = stored
        execution.owner = self.name
        if execution.state in FINISHED:
            return
        run = Run(self, execution, self.spec_of(execution.spec, execution.workflow_name))
        self.runs[execution.id] = run
        await run.resume(tasks, actions)

    # --- specs and input -----------------------------------------------------------------

    def specs(self, text: str) -> dict[str, WorkflowSpec]:
        # By digest: two texts must never share a parse (Python's hash may collide).
        key = hashlib.sha256(text.encode()).digest()
        found = self._specs.get(key)
        if found is None:
            found = parse(text, known_action=self.registry.__contains__)
            self._specs[key] = found
            if len(self._specs) > _SPEC_CACHE:
                self._specs.popitem(last=False)
        else:
            self._specs.move_to_end(key)
        return found

    def spec_of(self, text: str, name: str) -> WorkflowSpec:
        spec = self.specs(text).get(name)
        if spec is None:
            raise LookupError(f"no workflow named {name!r} in its definition")
        return spec

    def context_for(self, spec: WorkflowSpec, given: dict[str, Any]) -> dict[str, Any]:
        if len(orjson.dumps(given)) > self.settings.max_input_bytes:
            raise InputError(f"input larger than {self.settings.max_input_bytes} bytes")
        names = {name for name, _ in spec.input}
        unexpected = sorted(set(given) - names)
        if unexpected:
            raise InputError(f"unexpected input: {', '.join(unexpected)}")
        context: dict[str, Any] = {}
        missing = []
        for name, default in spec.input:
            if name in given:
                context[name] = given[name]
            elif default is REQUIRED:
                missing.append(name)
            else:
                context[name] = default
        if missing:
            raise InputError(f"missing input: {', '.join(missing)}")
        try:
            variables = evaluate(spec.vars, Scope(data=dict(context))) if spec.vars else {}
        except ExpressionError as exc:
            raise InputError(f"vars: {exc}") from exc
        return {**context, **variables}

    # --- executions ----------------------------------------------------------------------

    async def start_execution(
        self,
        definition: WorkflowDefinition,
        given: dict[str, Any],
        params: dict[str, Any] | None = None,
        project_id: str | None = None,
        description: str = "",
        parent: TaskExecution | None = None,
        root_id: str | None = None,
        privileged: bool = False,
    ) -> Execution:
        if len(self.runs) >= self.settings.max_running:
            raise Busy(f"this engine runs {len(self.runs)} executions, its most")
        spec = self.spec_of(definition.definition, definition.name)
        params = dict(params or {})
        if spec.type == "reverse":
            target = params.get("task_name")
            if target not in spec.tasks:
                raise InputError(
                    f"a reverse workflow needs params.task_name, one of: {', '.join(spec.tasks)}"
                )
        execution = Execution(
            workflow_name=definition.name,
            workflow_id=definition.id,
            project_id=project_id if project_id is not None else definition.project_id,
            spec=definition.definition,
            input=dict(given),
            params=params,
            workflow_namespace=definition.namespace,
            description=description,
            context=self.context_for(spec, given),
            task_execution_id=parent.id if parent else None,
            root_execution_id=root_id,
            privileged=privileged,
            owner=self.name,
            created_at=time.time(),
        )
        run = Run(self, execution, spec)
        self.runs[execution.id] = run
        metrics.WORKFLOW_RUNNING.set(len(self.runs))
        if parent is not None:
            parent.runtime_context = {**parent.runtime_context, "child": execution.id}
            await self.commit.write([execution], [parent])
        await run.begin()
        if execution.state not in FINISHED:  # else `ended` has told already
            self.announce(execution)
        return execution

    async def start_child(
        self, parent: Run, task: TaskExecution, name: str | None, given: Any
    ) -> Execution:
        if not isinstance(given, dict):
            raise ValueError(f"a sub-workflow's input must be a mapping, not {given!r}")
        e = parent.execution
        local = self.specs(e.spec).get(name or "")
        if local is not None:
            definition = WorkflowDefinition(
                name=local.name,
                definition=e.spec,
                project_id=e.project_id,
                namespace=e.workflow_namespace,
                id=e.workflow_id,
            )
        else:
            found = await self.store.definition(name or "", e.project_id, e.workflow_namespace)
            if found is None:
                raise LookupError(f"no workflow named {name!r}")
            definition = found
        return await self.start_execution(
            definition,
            given,
            params={"env": e.params["env"]} if "env" in e.params else {},
            project_id=e.project_id,
            parent=task,
            root_id=e.root_execution_id or e.id,
            privileged=e.privileged,
        )

    async def finished(self, execution_id: str) -> Execution:
        """Wait until the execution has ended (and is stored so); returns it. A parent task
        waits for its sub-workflow here too, whichever engine runs the sub-workflow."""
        while True:
            run = self.runs.get(execution_id)
            if run is not None:
                await asyncio.shield(run.ended)
                return run.execution
            stored = await self.store.execution(execution_id)
            if stored is None:
                raise LookupError(execution_id)
            if stored.state in FINISHED:
                return stored
            # Another engine's (or about to be taken over): its record tells when.
            await asyncio.sleep(self.settings.takeover_interval / 4)

    async def _ask(self, stored: Execution, state: str, info: str | None) -> None:
        """Ask the engine that runs the execution to take `state`, and wait until it has
        (`NotHere` if it has not within `REQUEST_WAIT`: it may still)."""
        await self.store.request_state(stored.id, state, info)
        deadline = time.monotonic() + REQUEST_WAIT
        while time.monotonic() < deadline:
            await asyncio.sleep(REQUEST_POLL / 2)
            now = await self.store.execution(stored.id)
            if now is None or now.state == state or now.state in FINISHED:
                return
        raise NotHere(
            f"asked engine {stored.owner}, which runs the execution, to make it {state}; "
            f"not done within {REQUEST_WAIT:.0f} s"
        )

    def ended(self, run: Run) -> None:
        self.runs.pop(run.execution.id, None)
        metrics.WORKFLOW_RUNNING.set(len(self.runs))
        metrics.WORKFLOW_EXECUTIONS.labels(run.execution.workflow_name, run.execution.state).inc()
        self.announce(run.execution)

    def announce(self, execution: Execution) -> None:
        if self.live.listening:
            data = {
                "id": execution.id,
                "workflow_name": execution.workflow_name,
                "state": execution.state,
                "project": execution.project_id,
            }
            self.live.publish("workflow.execution", data, execution.project_id)

    # --- commands ------------------------------------------------------------------------

    async def set_state(self, execution_id: str, state: str, info: str | None = None) -> None:
        """Pause, resume, cancel or fail an execution this engine runs (or may take over)."""
        run = self.runs.get(execution_id)
        if run is None:
            stored = await self.store.execution(execution_id)
            if stored is None:
                raise LookupError(execution_id)
            if stored.state in FINISHED:
                raise ValueError(f"the execution is {stored.state} already")
            owner = stored.owner
            alive = await self.leases.holders([LEASE_PREFIX + str(owner)]) if owner else {}
            if owner and owner != self.name and alive:
                await self._ask(stored, state, info)
                return
            if not await self.store.claim(execution_id, self.name, owner):
                raise NotHere("another engine took the execution over meanwhile")
            await self.resume(execution_id)
            run = self.runs.get(execution_id)
            if run is None:
                return
        if state == "PAUSED":
            await run.pause("paused by request")  # told by the pause
        elif state == "RUNNING":
            await run.unpause()
            self.announce(run.execution)
        else:
            await run.stop(state, info or f"{state.lower()} by request")  # told by `ended`
        # Sub-workflows follow their parent (those the parent's tasks started).
        for child in list(self.runs.values()):
            if child.execution.task_execution_id in run.tasks:
                await self.set_state(child.execution.id, state, info)
