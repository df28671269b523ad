"""What the API, the CLI and the inspector ask of workflows: definitions in, executions
started and steered, and the shipped workflows loaded at start."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from importlib import resources
from typing import Any

from opendoctor.core.workflows import FINISHED, Execution, WorkflowDefinition
from opendoctor.store.workflows import RunWrites, WorkflowStore
from opendoctor.workflow.engine import Busy, Engine, NotHere
from opendoctor.workflow.spec import REQUIRED, WorkflowSpec, parse

log = logging.getLogger(__name__)

BUILTIN_PACKAGE = "opendoctor.workflow.builtin"
_CACHE_MOST = 1024  # definitions kept for starts, at most
# Whom the workflows that rule templates start belong to: the operator's.
SERVICE_PROJECT = "admin"


def shown_input(spec: WorkflowSpec) -> str:
    """The input as Mistral lists it: `a, b=1`."""
    return ", ".join(
        name if default is REQUIRED else f"{name}={json.dumps(default)}"
        for name, default in spec.input
    )


def builtin_texts() -> dict[str, str]:
    """The shipped workflow files by file name."""
    folder = resources.files(BUILTIN_PACKAGE)
    return {
        f.name: f.read_text(encoding="utf-8")
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".yaml")
    }


class Workflows:
    def __init__(self, store: WorkflowStore, engine: Engine) -> None:
        self.store = store
        self.engine = engine
        # Definitions read to start executions: (ident, project, namespace) -> (the
        # store's generation then, when read, the definition). A start is the hot path
        # of a recovery; reading the definition was half of its time to the first action.
        self._definitions: dict[
            tuple[str, str | None, str], tuple[int, float, WorkflowDefinition]
        ] = {}

    async def definition(
        self, ident: str, project_id: str | None, namespace: str = ""
    ) -> WorkflowDefinition | None:
        """`store.definition`, kept `workflow.definition_cache_ttl` seconds (a change made
        through this process's store shows at once)."""
        key = (ident, project_id, namespace)
        ttl = self.engine.settings.definition_cache_ttl
        found = self._definitions.get(key)
        now = time.monotonic()
        if found is not None and found[0] == self.store.generation and now - found[1] < ttl:
            return found[2]
        generation = self.store.generation
        definition = await self.store.definition(ident, project_id, namespace)
        if definition is not None and ttl > 0:
            if len(self._definitions) >= _CACHE_MOST:
                self._definitions.clear()
            self._definitions[key] = (generation, now, definition)
        return definition

    def validate(self, text: str) -> dict[str, WorkflowSpec]:
        """Parse and check a definition file (`SpecError` names the line and the problem)."""
        return parse(text, known_action=self.engine.registry.__contains__)

    def definitions_of(
        self, text: str, project_id: str, scope: str, namespace: str
    ) -> list[WorkflowDefinition]:
        return [
            WorkflowDefinition(
                name=spec.name,
                definition=text,
                project_id=project_id,
                namespace=namespace,
                scope="public" if scope == "public" else "private",
                tags=list(spec.tags),
                input=shown_input(spec),
            )
            for spec in self.validate(text).values()
        ]

    async def add(
        self, text: str, project_id: str, scope: str = "private", namespace: str = ""
    ) -> list[WorkflowDefinition]:
        defs = self.definitions_of(text, project_id, scope, namespace)
        await self.store.add_definitions(defs)
        return defs

    async def update(
        self, text: str, project_id: str, scope: str = "private", namespace: str = ""
    ) -> list[WorkflowDefinition]:
        return await self.store.replace_definitions(
            self.definitions_of(text, project_id, scope, namespace)
        )

    async def add_builtin(self) -> list[WorkflowDefinition]:
        defs = []
        for text in builtin_texts().values():
            for d in self.definitions_of(text, "", "public", ""):
                d.builtin = True
                defs.append(d)
        await self.store.put_builtin(defs)
        return defs

    async def start(
        self,
        ident: str,
        given: dict[str, Any],
        project_id: str | None,
        params: dict[str, Any] | None = None,
        description: str = "",
        namespace: str = "",
        admin: bool = False,
        run_as: str | None = None,
    ) -> Execution:
        """Start a workflow (by id or name) for `project_id` (None: an admin, who runs it in
        the workflow's own project, or `run_as`'s). `LookupError` if there is no such
        workflow for them.
        Only an admin's execution may call the actions on the infrastructure."""
        definition = await self.definition(ident, project_id, namespace)
        if definition is None:
            raise LookupError(f"no workflow {ident!r}")
        return await self.engine.start_execution(
            definition,
            given,
            params=params,
            project_id=run_as or project_id or definition.project_id or SERVICE_PROJECT,
            description=description,
            privileged=admin or project_id is None,
        )

    async def set_state(self, execution_id: str, state: str, info: str | None = None) -> None:
        await self.engine.set_state(execution_id, state, info)

    async def describe(self, execution_id: str, description: str) -> None:
        """Give an execution a new description. `LookupError` if there is no such
        execution, `NotHere` if another engine runs it.

        The engine writes its records whole, so a change to a run it holds goes through
        its record, else the next commit would put the old description back; only the
        stored record of an execution that is over is nobody's to overwrite."""
        run = self.engine.runs.get(execution_id)
        if run is not None:
            run.execution.description = description
            await self.engine.commit.write([run.execution])
            return
        stored = await self.store.execution(execution_id)
        if stored is None:
            raise LookupError(f"no execution {execution_id}")
        if stored.state not in FINISHED:
            raise NotHere("the execution is run by another engine: change its description there")
        await self.store.write(RunWrites(executions=[replace(stored, description=description)]))

    async def start_for_service(
        self, workflow: str, given: dict[str, Any], description: str
    ) -> Execution:
        """Start `workflow` on opendoctor's own behalf (a rule template, recovery): in the
        workflow's project (the admin's for a shipped one), privileged, given those of
        `given` that it declares as input. `LookupError` if there is no such workflow,
        `InputError` if `given` lacks a required input."""
        definition = await self.definition(workflow, None)
        if definition is None:
            raise LookupError(f"no workflow {workflow!r}")
        spec = self.engine.spec_of(definition.definition, definition.name)
        declared = {name for name, _ in spec.input}
        return await self.engine.start_execution(
            definition,
            {k: v for k, v in given.items() if k in declared},
            project_id=definition.project_id or SERVICE_PROJECT,
            description=description,
            privileged=True,
        )


class TemplateWorkflows:
    """The inspector's `WorkflowRunner`: a rule template's `run_workflow` starts the
    workflow with what the template knows (the alarm, its resources, the fault, the
    template's params), given as the workflow's input for the names it declares."""

    def __init__(self, workflows: Workflows) -> None:
        self.workflows = workflows
        # Every request, started or not (what the template asked), and the executions.
        self.requested: list[tuple[str, dict[str, Any]]] = []
        self.started: list[str] = []

    async def run(self, workflow: str, given: dict[str, Any], origin: str) -> str | None:
        self.requested.append((workflow, given))
        try:
            execution = await self.workflows.start_for_service(
                workflow, given, f"started by template {origin}"
            )
        except (LookupError, ValueError, Busy) as exc:  # ValueError: InputError, SpecError
            log.warning(
                "workflow not started for a template",
                extra={"workflow": workflow, "template": origin, "error": str(exc)},
            )
            return None
        self.started.append(execution.id)
        return execution.id
