"""Entity matchers: does a vertex fit an entity of a template?"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opendoctor.infra.regex import RegexError, searcher
from opendoctor.inspector.graph import Vertex
from opendoctor.inspector.templates.schema import EntityIn, MatchValue, Regex

Test = Callable[[Any], bool]

# Normalized states and categories are upper case; people write "error" too.
_FOLDED = {"state", "category"}


def _test(value: MatchValue, fold: bool) -> Test:
    if isinstance(value, Regex):
        search = searcher(value.regex, ignore_case=fold)
        return lambda v: v is not None and search(str(v))
    wanted = {value} if isinstance(value, str) else set(value)
    if fold:
        wanted = {w.upper() for w in wanted}
        return lambda v: v is not None and str(v).upper() in wanted
    return lambda v: v in wanted


def _getter(field: str) -> Callable[[Vertex], Any]:
    if field == "state":
        return lambda v: v.aggregated_state
    if field.startswith("props."):
        prop = field.removeprefix("props.")
        return lambda v: (v.props or {}).get(prop)
    return lambda v: getattr(v, field)


@dataclass(frozen=True, slots=True)
class Matcher:
    entity: str
    # Fixed category and type let the search filter neighbours before calling tests.
    category: str | None
    type: str | None
    tests: tuple[tuple[Callable[[Vertex], Any], Test], ...]
    fields: frozenset[str]  # the vertex fields the tests read

    def __call__(self, vertex: Vertex) -> bool:
        if vertex.placeholder:
            return False
        if self.category is not None and vertex.category != self.category:
            return False
        if self.type is not None and vertex.type != self.type:
            return False
        return all(test(get(vertex)) for get, test in self.tests)


def compile_entity(name: str, spec: EntityIn) -> Matcher:
    """Compile an entity spec (regexes are compiled here, so bad ones fail at validation)."""
    fields: dict[str, MatchValue] = {}
    for field in ("type", "id", "name", "project", "state", "raw_state"):
        value = getattr(spec, field)
        if value is not None:
            fields[field] = value
    for prop, value in (spec.props or {}).items():
        fields[f"props.{prop}"] = value
    fixed_type = fields.pop("type") if isinstance(fields.get("type"), str) else None
    tests = []
    for field, value in fields.items():
        try:
            tests.append((_getter(field), _test(value, field in _FOLDED)))
        except RegexError as exc:
            raise ValueError(f"{field}: bad regex: {exc}") from exc
    assert fixed_type is None or isinstance(fixed_type, str)
    return Matcher(name, spec.category, fixed_type, tuple(tests), frozenset(fields))
