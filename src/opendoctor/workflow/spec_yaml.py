"""Reading a workflow file's YAML safely, keeping each node's line for error messages.

The text is composed into nodes (never constructed by a YAML loader, so no tag is ever
executed); anchors, aliases, duplicate keys and deep nesting are refused before any
value is built, so a "billion laughs" file costs no more than its own length.
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from opendoctor.workflow import expressions
from opendoctor.workflow.spec_types import SpecError

__all__ = [
    "MAX_DEPTH",
    "MAX_TEXT",
    "fail",
    "line_of",
    "load",
    "mapping",
    "sequence",
    "string",
    "to_value",
]

MAX_TEXT: Final = 1024 * 1024
MAX_DEPTH: Final = 32

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS: Final = frozenset(
    f"{_TAG}{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")
)
_CONSTRUCTOR: Final = SafeConstructor()


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def fail(node: Node | None, path: str, problem: str) -> NoReturn:
    raise SpecError(problem, line_of(node) if node is not None else None, path)


def _check_events(text: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        line = int(event.start_mark.line) + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise SpecError("YAML anchors and aliases are not allowed", line)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError(f"nesting deeper than {MAX_DEPTH} levels", line)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load(text: str) -> MappingNode:
    """The document's root mapping, after the bounds are checked."""
    if not isinstance(text, str):
        raise SpecError("a workflow definition must be text")
    if len(text) > MAX_TEXT or len(text.encode("utf-8", "replace")) > MAX_TEXT:
        raise SpecError(f"the definition is larger than {MAX_TEXT} bytes")
    try:
        _check_events(text)
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        raise SpecError(f"invalid YAML: {exc.problem or exc}", line) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}") from exc
    if root is None:
        raise SpecError("the definition is empty")
    if not isinstance(root, MappingNode):
        fail(root, "", "the definition must be a mapping of 'version' and workflows")
    return root


def _scalar(node: ScalarNode, path: str) -> Any:
    if node.tag not in _SCALAR_TAGS:
        fail(node, path, f"YAML tag {node.tag!r} is not allowed")
    kind = node.tag[len(_TAG) :]
    if kind in ("str", "timestamp"):
        return str(node.value)
    try:
        return getattr(_CONSTRUCTOR, f"construct_yaml_{kind}")(node)
    except (ValueError, yaml.YAMLError) as exc:
        fail(node, path, f"invalid {kind}: {node.value!r} ({exc})")


def _check_expression(node: Node, path: str, value: str) -> None:
    try:
        expressions.check(value)
    except expressions.ExpressionError as exc:
        fail(node, path, str(exc))


def mapping(node: Node, path: str, what: str = "a mapping") -> dict[str, tuple[Node, Node]]:
    """A mapping node's entries by key, in order; keys must be unique strings."""
    if not isinstance(node, MappingNode):
        fail(node, path, f"must be {what}")
    if node.tag != f"{_TAG}map":
        fail(node, path, f"YAML tag {node.tag!r} is not allowed")
    entries: dict[str, tuple[Node, Node]] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode):
            fail(key_node, path, "a key must be a string")
        key = _scalar(key_node, path)
        if not isinstance(key, str):
            fail(key_node, path, f"the key {key!r} must be a string")
        if key in entries:
            fail(key_node, _join(path, key), f"duplicate key {key!r}")
        entries[key] = (key_node, value_node)
    return entries


def sequence(node: Node, path: str, what: str = "a list") -> list[Node]:
    if not isinstance(node, SequenceNode):
        fail(node, path, f"must be {what}")
    if node.tag != f"{_TAG}seq":
        fail(node, path, f"YAML tag {node.tag!r} is not allowed")
    return list(node.value)


def string(node: Node, path: str, what: str = "a string") -> str:
    value = to_value(node, path) if isinstance(node, ScalarNode) else None
    if not isinstance(value, str):
        fail(node, path, f"must be {what}")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def to_value(node: Node, path: str) -> Any:
    """The plain value of a node; every string holding an expression must compile."""
    if isinstance(node, ScalarNode):
        value = _scalar(node, path)
        if isinstance(value, str):
            _check_expression(node, path, value)
        return value
    if isinstance(node, SequenceNode):
        return [to_value(item, f"{path}[{i}]") for i, item in enumerate(sequence(node, path))]
    result: dict[str, Any] = {}
    for key, (key_node, value_node) in mapping(node, path).items():
        _check_expression(key_node, path, key)
        result[key] = to_value(value_node, _join(path, key))
    return result


def load_fragment(text: str, line: int, path: str) -> Any:
    """A small YAML flow value written inside a string (``x in [1, 2]``)."""
    try:
        _check_events(text)
        node = yaml.compose(text, Loader=_Loader)
    except SpecError as exc:
        raise SpecError(exc.problem, line, path) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML in {text!r}", line, path) from exc
    if node is None:
        return None
    try:
        return to_value(node, path)
    except SpecError as exc:
        raise SpecError(exc.problem, line, path) from exc
