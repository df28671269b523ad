"""The workflow language: Mistral's v2 workflow files, parsed and validated.

``parse`` takes the text of a workflow file (``version: '2.0'`` and one key per
workflow) and returns the workflows as immutable specs, with ``task-defaults`` already
applied; anything wrong is a ``SpecError`` naming the line and the path of the node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final, Literal

from yaml.nodes import MappingNode, Node, ScalarNode

from opendoctor.workflow.spec_tasks import DEFAULTABLE, ParsedTask, parse_task
from opendoctor.workflow.spec_types import (
    ENGINE_COMMANDS,
    REQUIRED,
    Retry,
    SpecError,
    TaskSpec,
    Transition,
    WorkflowSpec,
)
from opendoctor.workflow.spec_yaml import (
    MAX_DEPTH,
    MAX_TEXT,
    fail,
    line_of,
    load,
    mapping,
    sequence,
    string,
    to_value,
)

__all__ = [
    "ENGINE_COMMANDS",
    "MAX_DEPTH",
    "MAX_TASKS",
    "MAX_TEXT",
    "MAX_WORKFLOWS",
    "REQUIRED",
    "Retry",
    "SpecError",
    "TaskSpec",
    "Transition",
    "WorkflowSpec",
    "parse",
]

MAX_TASKS: Final = 500
MAX_WORKFLOWS: Final = 100

_WORKFLOW_KEYS: Final = frozenset(
    {
        "type",
        "description",
        "tags",
        "input",
        "output",
        "output-on-error",
        "vars",
        "task-defaults",
        "tasks",
    }
)
_FIELD_OF: Final = {key: key.replace("-", "_") for key in DEFAULTABLE}


def parse(text: str, known_action: Callable[[str], bool] | None = None) -> dict[str, WorkflowSpec]:
    """The workflows of a Mistral v2 workflow file, by name, in file order."""
    root = load(text)
    entries = mapping(root, "")
    for key in ("workflows", "actions"):
        if key in entries:
            fail(
                entries[key][0],
                key,
                "workbooks are not supported: give a workflow file ('version' and workflows)",
            )
    if "version" not in entries:
        fail(root, "version", "missing \"version: '2.0'\"")
    version_node = entries["version"][1]
    if to_value(version_node, "version") not in ("2.0", 2.0):
        fail(version_node, "version", "only version '2.0' of the workflow language is supported")
    names = [name for name in entries if name != "version"]
    if not names:
        fail(root, "", "the file defines no workflow")
    if len(names) > MAX_WORKFLOWS:
        fail(
            entries[names[MAX_WORKFLOWS]][0],
            names[MAX_WORKFLOWS],
            f"more than {MAX_WORKFLOWS} workflows in one file",
        )
    return {name: _workflow(name, *entries[name], known_action) for name in names}


def _workflow(
    name: str, key_node: Node, node: Node, known_action: Callable[[str], bool] | None
) -> WorkflowSpec:
    _check_name(key_node, name, name, "workflow")
    entries = mapping(node, name, "a mapping (a workflow file holds 'version' and workflows)")
    for key, (k_node, _) in entries.items():
        if key not in _WORKFLOW_KEYS:
            fail(k_node, f"{name}.{key}", f"unknown key {key!r} in a workflow")

    def value(key: str) -> tuple[Node, str]:
        return entries[key][1], f"{name}.{key}"

    wf_type: Literal["direct", "reverse"] = "direct"
    if "type" in entries:
        given = to_value(*value("type"))
        if given not in ("direct", "reverse"):
            fail(entries["type"][1], f"{name}.type", "type must be 'direct' or 'reverse'")
        wf_type = given
    fields: dict[str, Any] = {}
    if "description" in entries:
        fields["description"] = string(*value("description"))
    if "tags" in entries:
        tag_node, tag_path = value("tags")
        tags = sequence(tag_node, tag_path, "a list of strings")
        fields["tags"] = tuple(string(t, f"{tag_path}[{i}]") for i, t in enumerate(tags))
    if "input" in entries:
        fields["input"] = _inputs(*value("input"))
    for key in ("output", "output-on-error"):
        if key in entries:
            fields[key.replace("-", "_")] = to_value(*value(key))
    if "vars" in entries:
        mapping(*value("vars"))
        fields["vars"] = to_value(*value("vars"))
    if "tasks" not in entries:
        fail(node, f"{name}.tasks", "a workflow needs tasks")
    tasks_node, tasks_path = value("tasks")
    task_entries = mapping(tasks_node, tasks_path, "a mapping of tasks")
    if not task_entries:
        fail(tasks_node, tasks_path, "a workflow needs at least one task")
    if len(task_entries) > MAX_TASKS:
        extra = list(task_entries)[MAX_TASKS]
        fail(
            task_entries[extra][0],
            f"{tasks_path}.{extra}",
            f"more than {MAX_TASKS} tasks in workflow {name}",
        )
    parsed: dict[str, ParsedTask] = {}
    for task_name, (task_key, task_node) in task_entries.items():
        task_path = f"{tasks_path}.{task_name}"
        _check_name(task_key, task_path, task_name, "task")
        if task_name in ENGINE_COMMANDS:
            fail(task_key, task_path, f"{task_name!r} is an engine command, not a task name")
        task = parse_task(task_name, task_node, task_path, known_action)
        _check_type(wf_type, task, task_node, task_path)
        parsed[task_name] = task
    defaults: ParsedTask | None = None
    if "task-defaults" in entries:
        defaults_node, defaults_path = value("task-defaults")
        defaults = parse_task("", defaults_node, defaults_path, known_action, defaults=True)
        _check_type(wf_type, defaults, defaults_node, defaults_path)
    checked = [*parsed.values(), *([defaults] if defaults else [])]
    _check_refs(name, checked, set(parsed))
    tasks = {n: _with_defaults(t, defaults) for n, t in parsed.items()}
    spec = WorkflowSpec(name=name, line=line_of(key_node), type=wf_type, tasks=tasks, **fields)
    if wf_type == "direct" and not spec.start_tasks():
        fail(tasks_node, tasks_path, f"workflow {name} has no start task: every task is a target")
    if wf_type == "reverse":
        _check_cycles(spec, task_entries)
    return spec


def _check_name(node: Node, path: str, name: str, what: str) -> None:
    if not name.strip() or any(c.isspace() or c in "()=," for c in name):
        fail(node, path, f"{name!r} is not a valid {what} name (no spaces, '(', ')', '=' or ',')")


def _inputs(node: Node, path: str) -> tuple[tuple[str, Any], ...]:
    items = sequence(node, path, "a list of names, or of one-key mappings {name: default}")
    result: dict[str, Any] = {}
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]"
        if isinstance(item, MappingNode):
            entries = mapping(item, item_path)
            if len(entries) != 1:
                fail(item, item_path, "an input with a default is a one-key mapping")
            ((input_name, (key_node, default_node)),) = entries.items()
            default = to_value(default_node, f"{path}.{input_name}")
        elif isinstance(item, ScalarNode):
            key_node, input_name, default = item, string(item, item_path, "a name"), REQUIRED
        else:
            fail(item, item_path, "must be a name or a one-key mapping {name: default}")
        if not input_name.strip():
            fail(key_node, item_path, "an input needs a name")
        if input_name in result:
            fail(key_node, item_path, f"the input {input_name!r} is declared twice")
        result[input_name] = default
    return tuple(result.items())


def _check_type(wf_type: str, task: ParsedTask, node: Node, path: str) -> None:
    entries = mapping(node, path)
    if wf_type == "reverse":
        for key in ("on-success", "on-error", "on-complete", "join"):
            if key in entries:
                fail(
                    entries[key][0],
                    f"{path}.{key}",
                    f"{key!r} belongs to direct workflows: a reverse workflow uses 'requires'",
                )
    elif "requires" in entries:
        fail(
            entries["requires"][0],
            f"{path}.requires",
            "'requires' belongs to reverse workflows: a direct workflow uses on-success",
        )


def _check_refs(name: str, tasks: list[ParsedTask], names: set[str]) -> None:
    for task in tasks:
        for target, line, path in task.refs:
            if target not in names and target not in ENGINE_COMMANDS:
                raise SpecError(f"no task named {target!r} in workflow {name}", line, path)
        for required in task.spec.requires:
            if required not in names:
                raise SpecError(
                    f"no task named {required!r} in workflow {name}",
                    task.spec.line,
                    f"{name}.tasks.{task.spec.name}.requires"
                    if task.spec.name
                    else f"{name}.task-defaults.requires",
                )


def _with_defaults(task: ParsedTask, defaults: ParsedTask | None) -> TaskSpec:
    if defaults is None:
        return task.spec
    changes: dict[str, Any] = {}
    for key in defaults.keys - task.keys:
        field = _FIELD_OF[key]
        value = getattr(defaults.spec, field)
        # A default transition or requirement never points a task at itself.
        if key in ("on-success", "on-error", "on-complete"):
            value = tuple(t for t in value if t.target != task.spec.name)
        elif key == "requires":
            value = tuple(r for r in value if r != task.spec.name)
        changes[field] = value
    return dataclasses.replace(task.spec, **changes) if changes else task.spec


def _check_cycles(spec: WorkflowSpec, task_entries: dict[str, tuple[Node, Node]]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for required in spec.tasks[name].requires:
            if state.get(required) == 1:
                cycle = [*trail[trail.index(required) :], required]
                key_node = task_entries[required][0]
                fail(
                    key_node,
                    f"{spec.name}.tasks.{required}.requires",
                    "'requires' makes a cycle: " + " -> ".join(cycle),
                )
            if required not in state:
                visit(required, [*trail, required])
        state[name] = 2

    for name in spec.tasks:
        if name not in state:
            visit(name, [name])
