"""Parsing one task (or a workflow's ``task-defaults``) from its YAML node."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from yaml.nodes import MappingNode, Node, ScalarNode

from opendoctor.workflow import expressions
from opendoctor.workflow.spec_inline import parse_inline, parse_params
from opendoctor.workflow.spec_types import ENGINE_COMMANDS, Retry, SpecError, TaskSpec, Transition
from opendoctor.workflow.spec_yaml import (
    fail,
    line_of,
    load_fragment,
    mapping,
    sequence,
    string,
    to_value,
)

__all__ = ["DEFAULTABLE", "ParsedTask", "parse_task"]

_TRANSITION_KEYS: Final = ("on-success", "on-error", "on-complete")
_COMMON_KEYS: Final = frozenset(
    {
        "retry",
        "timeout",
        "wait-before",
        "wait-after",
        "pause-before",
        "concurrency",
        "safe-rerun",
    }
)
DEFAULTABLE: Final = _COMMON_KEYS | {*_TRANSITION_KEYS, "requires"}
_TASK_KEYS: Final = DEFAULTABLE | {
    "action",
    "workflow",
    "input",
    "publish",
    "publish-on-error",
    "join",
    "with-items",
    "keep-result",
    "description",
    "target",
}
_WITH_ITEMS_RE: Final = re.compile(r"\s*([A-Za-z_]\w*)\s+in\s+(.+?)\s*", re.S)
_COMMAND_RE: Final = re.compile(r"\s*([^\s()]+)\s*(?:\((.*)\))?\s*", re.S)


@dataclass(slots=True)
class ParsedTask:
    """A task before ``task-defaults`` are applied: which keys it set, and the
    transitions it names (with their lines) for the workflow-level checks."""

    spec: TaskSpec
    keys: set[str]
    refs: list[tuple[str, int, str]] = field(default_factory=list)


# -- field helpers -------------------------------------------------------------------


def _checked(node: Node, path: str, value: Any) -> Any:
    try:
        expressions.check(value)
    except expressions.ExpressionError as exc:
        fail(node, path, str(exc))
    return value


def _expression(node: Node, path: str) -> str:
    value = to_value(node, path)
    if not isinstance(value, str) or not expressions.has_expression(value):
        fail(node, path, "must be an expression (<% ... %> or {{ ... }})")
    return value


def _number(node: Node, path: str, *, integer: bool = False, minimum: float = 0) -> Any:
    value = to_value(node, path)
    if isinstance(value, str) and expressions.has_expression(value):
        return value
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        what = "an integer" if integer else "a number"
        fail(node, path, f"must be {what} of at least {minimum:g}, or an expression")
    return value


def _boolean(node: Node, path: str, *, expression: bool) -> Any:
    value = to_value(node, path)
    if not isinstance(value, bool) and not (
        expression and isinstance(value, str) and expressions.has_expression(value)
    ):
        fail(node, path, "must be true or false" + (", or an expression" if expression else ""))
    return value


def _dict(node: Node, path: str) -> dict[str, Any]:
    mapping(node, path)
    value: dict[str, Any] = to_value(node, path)
    return value


def _names(node: Node, path: str) -> tuple[str, ...]:
    if isinstance(node, ScalarNode):
        return (string(node, path, "a task name or a list of them"),)
    items = sequence(node, path, "a task name or a list of them")
    return tuple(string(item, f"{path}[{i}]", "a task name") for i, item in enumerate(items))


def _retry(node: Node, path: str) -> Retry:
    entries = mapping(node, path)
    for key, (key_node, _) in entries.items():
        if key not in ("count", "delay", "break-on", "continue-on"):
            fail(key_node, f"{path}.{key}", f"unknown key {key!r} in retry")
    if "count" not in entries:
        fail(node, path, "retry needs a count")
    count = _number(entries["count"][1], f"{path}.count", integer=True)
    delay = _number(entries["delay"][1], f"{path}.delay") if "delay" in entries else 0
    break_on = (
        _expression(entries["break-on"][1], f"{path}.break-on") if "break-on" in entries else None
    )
    continue_on = (
        _expression(entries["continue-on"][1], f"{path}.continue-on")
        if "continue-on" in entries
        else None
    )
    return Retry(count, delay, break_on, continue_on)


def _with_items(node: Node, path: str) -> tuple[tuple[str, Any], ...]:
    items = [node] if isinstance(node, ScalarNode) else sequence(node, path, "'x in <list>'")
    result: list[tuple[str, Any]] = []
    for i, item in enumerate(items):
        item_path = path if item is node else f"{path}[{i}]"
        text = string(item, item_path, "'x in <list or expression>'")
        match = _WITH_ITEMS_RE.fullmatch(text)
        if match is None:
            fail(item, item_path, f"{text!r} is not 'x in <list or expression>'")
        name, source = match.groups()
        if any(name == seen for seen, _ in result):
            fail(item, item_path, f"the variable {name!r} is given twice")
        if not expressions.has_expression(source):
            source = load_fragment(source, line_of(item), item_path)
            if not isinstance(source, list):
                fail(item, item_path, f"{text!r}: the items must be a list or an expression")
        result.append((name, source))
    return tuple(result)


def _join_value(node: Node, path: str) -> int | str:
    value = to_value(node, path)
    if value != "all" and not (
        isinstance(value, int) and not isinstance(value, bool) and value > 0
    ):
        fail(node, path, "join must be 'all' or a positive number")
    result: int | str = value
    return result


# -- transitions ---------------------------------------------------------------------


def _transition(text: str, guard: str | None, node: Node, path: str) -> Transition:
    match = _COMMAND_RE.fullmatch(text)
    if match is None or not match.group(1):
        fail(node, path, f"{text!r} is not a task name or an engine command")
    target, param_text = match.groups()
    params: dict[str, Any] = {}
    if param_text is not None:
        if target not in ENGINE_COMMANDS:
            fail(node, path, f"only the engine commands take parameters, not {target!r}")
        try:
            params = parse_params(param_text, stops=",")
        except (ValueError, json.JSONDecodeError) as exc:
            fail(node, path, f"parameters of {target!r}: {exc}")
        for key in params:
            if key != "msg":
                fail(node, path, f"{target!r} takes only 'msg', not {key!r}")
        _checked(node, path, params)
    return Transition(target, guard, params)


def _transitions(node: Node, path: str, refs: list[tuple[str, int, str]]) -> tuple[Transition, ...]:
    items = [node] if isinstance(node, ScalarNode) else sequence(node, path, "a list of tasks")
    result: list[Transition] = []
    for i, item in enumerate(items):
        item_path = path if item is node else f"{path}[{i}]"
        if isinstance(item, MappingNode):
            entries = mapping(item, item_path)
            if len(entries) != 1:
                fail(item, item_path, "a guarded transition is one 'task: <% condition %>'")
            ((text, (key_node, guard_node)),) = entries.items()
            guard = None
            if not (isinstance(guard_node, ScalarNode) and to_value(guard_node, item_path) is None):
                guard = _expression(guard_node, item_path)
            transition = _transition(text, guard, key_node, item_path)
        else:
            transition = _transition(string(item, item_path, "a task name"), None, item, item_path)
        refs.append((transition.target, line_of(item), item_path))
        result.append(transition)
    return tuple(result)


def _on_clause(
    key: str,
    node: Node,
    path: str,
    refs: list[tuple[str, int, str]],
    publishes: dict[str, dict[str, Any]],
) -> tuple[Transition, ...]:
    """``on-*`` as a list, or Mistral's newer ``{publish: ..., next: ...}`` form."""
    if not isinstance(node, MappingNode):
        return _transitions(node, path, refs)
    entries = mapping(node, path)
    for name, (key_node, value_node) in entries.items():
        if name == "publish":
            scopes = mapping(value_node, f"{path}.publish")
            for scope, (scope_key, scope_value) in scopes.items():
                if scope != "branch":
                    fail(
                        scope_key,
                        f"{path}.publish.{scope}",
                        f"only 'branch' publishing is supported, not {scope!r}",
                    )
                publishes[key] = _dict(scope_value, f"{path}.publish.branch")
        elif name != "next":
            fail(key_node, f"{path}.{name}", f"unknown key {name!r} (expected publish or next)")
    if "next" not in entries:
        return ()
    return _transitions(entries["next"][1], f"{path}.next", refs)


def _merge(node: Node, path: str, *parts: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        for name, value in part.items():
            if name in merged:
                fail(node, path, f"{name!r} is published twice")
            merged[name] = value
    return merged


# -- the task ------------------------------------------------------------------------


def parse_task(
    name: str,
    node: Node,
    path: str,
    known_action: Callable[[str], bool] | None,
    *,
    defaults: bool = False,
) -> ParsedTask:
    entries = mapping(node, path, "a mapping of task properties")
    allowed = DEFAULTABLE if defaults else _TASK_KEYS
    for key, (key_node, _) in entries.items():
        if key not in allowed:
            where = "task-defaults" if defaults else "a task"
            fail(key_node, f"{path}.{key}", f"unknown key {key!r} in {where}")
    fields: dict[str, Any] = {}
    refs: list[tuple[str, int, str]] = []
    publishes: dict[str, dict[str, Any]] = {}

    def value(key: str) -> tuple[Node, str]:
        return entries[key][1], f"{path}.{key}"

    if "action" in entries and "workflow" in entries:
        fail(entries["workflow"][0], path, "a task has 'action' or 'workflow', not both")
    inline: dict[str, Any] = {}
    for key in ("action", "workflow"):
        if key in entries:
            ref_node, ref_path = value(key)
            text = string(ref_node, ref_path, f"the {key}'s name and parameters")
            try:
                fields[key], inline = parse_inline(text)
            except (ValueError, json.JSONDecodeError) as exc:
                fail(ref_node, ref_path, f"{text!r}: {exc}")
            _checked(ref_node, ref_path, inline)
            if key == "action" and known_action is not None and not known_action(fields[key]):
                fail(ref_node, ref_path, f"unknown action {fields[key]!r}")
    if not defaults and "action" not in fields and "workflow" not in fields:
        fields["action"] = "std.noop"
    task_input = _dict(*value("input")) if "input" in entries else {}
    for key in inline.keys() & task_input.keys():
        fail(entries["input"][1], f"{path}.input.{key}", f"{key!r} is also given inline")
    fields["input"] = {**inline, **task_input}
    for key in _TRANSITION_KEYS:
        if key in entries:
            if defaults and isinstance(entries[key][1], MappingNode):
                clause = mapping(*value(key))
                if "publish" in clause:
                    fail(
                        clause["publish"][0],
                        f"{path}.{key}.publish",
                        "publishing is not supported in task-defaults",
                    )
            fields[key.replace("-", "_")] = _on_clause(key, *value(key), refs, publishes)
    plain_publish = _dict(*value("publish")) if "publish" in entries else {}
    plain_on_error = _dict(*value("publish-on-error")) if "publish-on-error" in entries else {}
    complete = publishes.get("on-complete", {})
    fields["publish"] = _merge(node, path, plain_publish, publishes.get("on-success", {}), complete)
    fields["publish_on_error"] = _merge(
        node, path, plain_on_error, publishes.get("on-error", {}), complete
    )
    if "join" in entries:
        fields["join"] = _join_value(*value("join"))
    if "with-items" in entries:
        fields["with_items"] = _with_items(*value("with-items"))
    if "concurrency" in entries:
        fields["concurrency"] = _number(*value("concurrency"), integer=True, minimum=1)
    if "retry" in entries:
        fields["retry"] = _retry(*value("retry"))
    for key in ("timeout", "wait-before", "wait-after"):
        if key in entries:
            fields[key.replace("-", "_")] = _number(*value(key))
    if "pause-before" in entries:
        fields["pause_before"] = _boolean(*value("pause-before"), expression=True)
    if "keep-result" in entries:
        fields["keep_result"] = _boolean(*value("keep-result"), expression=False)
    if "safe-rerun" in entries:
        fields["safe_rerun"] = _boolean(*value("safe-rerun"), expression=False)
    if "requires" in entries:
        fields["requires"] = _names(*value("requires"))
    if "description" in entries:
        string(*value("description"))
    if "target" in entries:
        to_value(*value("target"))
    try:
        spec = TaskSpec(name=name, line=line_of(node), **fields)
    except TypeError as exc:  # a bug here, not in the file: say where it happened
        raise SpecError(f"internal error: {exc}", line_of(node), path) from exc
    return ParsedTask(spec, set(entries), refs)
