"""A compiled template: its entities, scenarios and the clauses the engine matches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from opendoctor.inspector.graph import Direction
from opendoctor.inspector.templates import condition as cond
from opendoctor.inspector.templates.matchers import Matcher
from opendoctor.inspector.templates.schema import ActionIn, RaiseAlarm


class TemplateError(ValueError):
    """A template cannot be used; `problems` lists every reason, each with its line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Step:
    """One move of the search: follow `relation` from a bound entity, or check it."""

    relation: cond.Relation
    check: bool  # both ends bound already
    forward: bool  # from the relation's source to its target


@dataclass(slots=True)
class Clause:
    index: int
    entities: tuple[str, ...]  # bound by the positive part, in match-key order
    relations: tuple[cond.Relation, ...]
    negatives: tuple[cond.Relation, ...]
    plans: dict[str, tuple[Step, ...]] = field(default_factory=dict)
    # The alarm a notify names as cause unless it says otherwise: the clause's first.
    alarm_entity: str | None = None
    quantifiers: tuple[Quantifier, ...] = ()


@dataclass(frozen=True, slots=True)
class Quantifier:
    """`ALL(each [label] bound, inner)` / `ANY(...)` of a clause, ready to evaluate."""

    every: bool  # ALL, else ANY
    negated: bool
    label: str
    path: bool
    bound: str  # the end the rest of the clause binds
    each: str  # the entity quantified over
    toward_each: Direction  # from the bound vertex to the related ones
    inner: tuple[Clause, ...]  # the inner condition's alternatives, each binding `each`
    text: str

    @property
    def toward_bound(self) -> Direction:
        return "out" if self.toward_each == "in" else "in"


@dataclass(slots=True)
class Scenario:
    index: int
    condition: str
    clauses: list[Clause]
    actions: list[ActionIn]
    line: int | None


@dataclass(slots=True)
class Template:
    name: str
    description: str
    entities: dict[str, Matcher]
    scenarios: list[Scenario]
    text: str

    def raised(self) -> Iterable[tuple[Scenario, RaiseAlarm]]:
        for scenario in self.scenarios:
            for action in scenario.actions:
                if isinstance(action, RaiseAlarm):
                    yield scenario, action


def clauses_within(clause: Clause) -> Iterator[Clause]:
    """The clause and the alternatives of the conditions inside its ALL( and ANY(."""
    yield clause
    for quantifier in clause.quantifiers:
        yield from quantifier.inner
