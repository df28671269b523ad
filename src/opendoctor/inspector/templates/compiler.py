"""From template text to a checked, compiled `Template`, or a `TemplateError` naming the line.

Checks beyond the schema: every entity a condition or an action names exists; each
alternative of a condition has something positive to start from, is connected, and binds
every entity its actions use; negations touch a bound entity; alarms given as causes are
alarm entities; and, across every template given, no alarm can end up causing itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from opendoctor.inspector.graph.states import Category
from opendoctor.inspector.templates import condition as cond
from opendoctor.inspector.templates.cycles import find_cause_cycle
from opendoctor.inspector.templates.matchers import Matcher, compile_entity
from opendoctor.inspector.templates.model import (
    Clause,
    Quantifier,
    Scenario,
    Step,
    Template,
    TemplateError,
)
from opendoctor.inspector.templates.schema import (
    ACTIONS,
    ActionIn,
    AddCausalRelationship,
    MarkDown,
    Notify,
    RaiseAlarm,
    RunWorkflow,
    SetState,
    TemplateIn,
)
from opendoctor.inspector.templates.yamlsrc import Located, Path, SourceError


def _plan(anchor: str, relations: tuple[cond.Relation, ...]) -> tuple[Step, ...]:
    bound = {anchor}
    left = list(relations)
    steps: list[Step] = []
    while left:
        for rel in left:
            if rel.source in bound or rel.target in bound:
                break
        else:  # pragma: no cover - connectivity was checked before planning
            raise AssertionError("disconnected clause")
        left.remove(rel)
        both = rel.source in bound and rel.target in bound
        steps.append(Step(rel, both, rel.source in bound))
        bound |= {rel.source, rel.target}
    return tuple(steps)


def _connected(entities: set[str], relations: Iterable[cond.Relation]) -> bool:
    if not entities:
        return True
    reached = {next(iter(sorted(entities)))}
    rels = list(relations)
    grew = True
    while grew:
        grew = False
        for rel in rels:
            ends = {rel.source, rel.target}
            if ends & reached and not ends <= reached:
                reached |= ends
                grew = True
    return reached >= entities


def _action_entities(action: ActionIn) -> list[tuple[str, str]]:
    """(role, entity) pairs an action refers to."""
    if isinstance(action, RaiseAlarm):
        out = [("target", action.target)]
        return out + ([("causing_alarm", action.causing_alarm)] if action.causing_alarm else [])
    if isinstance(action, AddCausalRelationship):
        return [("source", action.source), ("target", action.target)]
    if isinstance(action, Notify):
        return [("target", action.target)] + ([("cause", action.cause)] if action.cause else [])
    if isinstance(action, RunWorkflow):
        return [("target", action.target)] if action.target else []
    assert isinstance(action, SetState | MarkDown)
    return [("target", action.target)]


class _Compiler:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.problems: list[str] = []
        self.src: Located | None = None

    def fail(self, path: Path, message: str) -> None:
        line = self.src.line(path) if self.src else None
        self.problems.append(f"line {line}: {message}" if line else message)

    def raise_if_failed(self) -> None:
        if self.problems:
            raise TemplateError(self.source, sorted(self.problems, key=_line_of))

    def compile(self) -> Template:
        try:
            self.src = Located(self.text)
        except SourceError as exc:
            raise TemplateError(self.source, [str(exc)]) from exc
        if not isinstance(self.src.data, dict):
            raise TemplateError(
                self.source, ["a template is a mapping with name, entities, scenarios"]
            )
        try:
            spec = TemplateIn.model_validate(self.src.data)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
                where = ".".join(str(p) for p in loc)
                self.fail(loc, f"{where}: {err['msg']}")
            self.raise_if_failed()
            raise
        entities: dict[str, Matcher] = {}
        for name, entity in spec.entities.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name.lower() in cond.KEYWORDS:
                self.fail(
                    ("entities", name),
                    f"entity name {name!r} must be an identifier, not AND/OR/NOT",
                )
                continue
            try:
                entities[name] = compile_entity(name, entity)
            except ValueError as exc:
                self.fail(("entities", name), f"entity {name!r}: {exc}")
        scenarios = [
            self.scenario(i, s.condition, s.actions, entities) for i, s in enumerate(spec.scenarios)
        ]
        self.raise_if_failed()
        return Template(spec.name, spec.description, entities, scenarios, self.text)

    def scenario(
        self, index: int, text: str, raw_actions: list[dict[str, Any]], entities: dict[str, Matcher]
    ) -> Scenario:
        path: Path = ("scenarios", index, "condition")
        line = self.src.line(("scenarios", index)) if self.src else None
        actions = self.actions(index, raw_actions, entities)
        try:
            clauses_lits = cond.dnf(cond.parse(text))
        except cond.ConditionError as exc:
            self.fail(path, f"condition: {exc}")
            return Scenario(index, text, [], actions, line)
        clauses: list[Clause] = []
        for i, lits in enumerate(clauses_lits):
            clause = self.clause(path, i, lits, entities)
            if clause is None:
                continue
            for a_index, action in enumerate(actions):
                for role, entity in _action_entities(action):
                    if entity not in clause.entities:
                        self.fail(
                            ("scenarios", index, "actions", a_index),
                            f"{type(action).__name__} {role} {entity!r} is not bound by "
                            f"the alternative '{_show(lits)}' of the condition",
                        )
            clauses.append(clause)
        return Scenario(index, text, clauses, actions, line)

    def clause(
        self, path: Path, index: int, lits: list[cond.Literal], entities: dict[str, Matcher]
    ) -> Clause | None:
        for lit in lits:
            for name in _names(lit):
                if name not in entities:
                    known = ", ".join(entities) or "none"
                    self.fail(
                        path, f"condition names {name!r}, which is not an entity (known: {known})"
                    )
                    return None
        if any(isinstance(lit, cond.Entity) and lit.negated for lit in lits):
            self.fail(
                path,
                "NOT before a lone entity says nothing: "
                "negate a relation, e.g. NOT alarm [on] host",
            )
            return None
        if any(isinstance(lit, cond.Relation) and lit.negated and lit.path for lit in lits):
            self.fail(
                path,
                "NOT before a path [label*] is not supported: "
                "say NOT ANY(a [label*] b, a) for 'no such chain'",
            )
            return None
        positives = [
            lit for lit in lits if not lit.negated and not isinstance(lit, cond.Quantified)
        ]
        if not positives:
            self.fail(
                path,
                f"the alternative '{_show(lits)}' is all negative: "
                "it needs something that holds to start from",
            )
            return None
        relations = tuple(lit for lit in positives if isinstance(lit, cond.Relation))
        bound = {lit.name for lit in positives if isinstance(lit, cond.Entity)}
        bound |= {e for rel in relations for e in (rel.source, rel.target)}
        if not _connected(bound, relations):
            self.fail(
                path,
                f"in '{_show(lits)}' the entities {sorted(bound)} are not all linked by relations",
            )
            return None
        negatives = tuple(lit for lit in lits if isinstance(lit, cond.Relation) and lit.negated)
        for neg in negatives:
            if neg.source not in bound and neg.target not in bound:
                self.fail(path, f"'{neg}' touches no entity that the rest of its alternative binds")
                return None
        quantifiers: list[Quantifier] = []
        for lit in lits:
            if isinstance(lit, cond.Quantified):
                quantifier = self.quantifier(path, lit, bound, entities)
                if quantifier is None:
                    return None
                quantifiers.append(quantifier)
        ordered = tuple(sorted(bound))
        clause = Clause(index, ordered, relations, negatives, quantifiers=tuple(quantifiers))
        clause.plans = {e: _plan(e, relations) for e in ordered}
        clause.alarm_entity = next(
            (e for e in ordered if entities[e].category == Category.ALARM), None
        )
        return clause

    def quantifier(
        self, path: Path, lit: cond.Quantified, bound: set[str], entities: dict[str, Matcher]
    ) -> Quantifier | None:
        rel = lit.relation
        ends = [e for e in (rel.source, rel.target) if e in bound]
        if len(ends) != 1 or rel.source == rel.target:
            self.fail(
                path,
                f"in '{lit}' one end of '{rel}' must be bound by the rest of the "
                "alternative and the other quantified over",
            )
            return None
        (anchor,) = ends
        each = rel.target if anchor == rel.source else rel.source
        inner: list[Clause] = []
        for i, alternative in enumerate(lit.inner):
            names = {n for inner_lit in alternative for n in _names(inner_lit)}
            if each not in names:
                self.fail(path, f"in '{lit}' the condition after ',' must name {each!r}")
                return None
            outside = sorted(names & (bound | {anchor}))
            if outside:
                self.fail(
                    path,
                    f"in '{lit}' the condition after ',' names {outside[0]!r}, which the rest "
                    f"of the alternative binds: use {each!r} and entities of its own",
                )
                return None
            clause = self.clause(path, i, list(alternative), entities)
            if clause is None:
                return None
            inner.append(clause)
        return Quantifier(
            every=lit.kind == "all",
            negated=lit.negated,
            label=rel.label,
            path=rel.path,
            bound=anchor,
            each=each,
            toward_each="in" if each == rel.source else "out",
            inner=tuple(inner),
            text=str(lit),
        )

    def actions(
        self, index: int, raw: list[dict[str, Any]], entities: dict[str, Matcher]
    ) -> list[ActionIn]:
        out: list[ActionIn] = []
        for i, item in enumerate(raw):
            path: Path = ("scenarios", index, "actions", i)
            if len(item) != 1:
                self.fail(path, f"an action is one of {sorted(ACTIONS)} with its parameters")
                continue
            ((kind, params),) = item.items()
            model = ACTIONS.get(kind)
            if model is None:
                self.fail(path, f"unknown action {kind!r} (expected one of {', '.join(ACTIONS)})")
                continue
            try:
                action = model.model_validate(params or {})
            except ValidationError as exc:
                for err in exc.errors():
                    where = ".".join(str(p) for p in err["loc"])
                    self.fail((*path, kind, *err["loc"]), f"{kind}.{where}: {err['msg']}")
                continue
            for role, entity in _action_entities(action):  # type: ignore[arg-type]
                matcher = entities.get(entity)
                if matcher is None:
                    self.fail(path, f"{kind} {role} {entity!r} is not an entity")
                elif role in ("causing_alarm", "cause", "source") or isinstance(
                    action, AddCausalRelationship
                ):
                    if matcher.category != Category.ALARM:
                        self.fail(
                            path,
                            f"{kind} {role} {entity!r} must be an alarm entity (category: ALARM)",
                        )
                elif isinstance(action, MarkDown) and matcher.type not in ("host", "server"):
                    self.fail(
                        path,
                        "mark_down acts on host and server entities; "
                        f"give {entity!r} type host or server",
                    )
            out.append(action)  # type: ignore[arg-type]
        return out


def _line_of(problem: str) -> int:
    """Order problems as they appear in the file (those without a line first)."""
    match = re.match(r"line (\d+):", problem)
    return int(match.group(1)) if match else 0


def _names(lit: cond.Literal) -> list[str]:
    if isinstance(lit, cond.Entity):
        return [lit.name]
    if isinstance(lit, cond.Relation):
        return [lit.source, lit.target]
    return [lit.relation.source, lit.relation.target] + [
        n for alternative in lit.inner for inner in alternative for n in _names(inner)
    ]


def _show(lits: list[cond.Literal]) -> str:
    return " AND ".join(str(lit) for lit in lits)


def compile_template(
    text: str, source: str = "template", others: Iterable[Template] = ()
) -> Template:
    """Compile `text`, checking it alone and (for cause cycles) together with `others`."""
    template = _Compiler(text, source).compile()
    cycle = find_cause_cycle([*[o for o in others if o.name != template.name], template])
    if cycle:
        # Point at this template's scenario that raises an alarm of the loop.
        line = next((sc.line for sc, a in template.raised() if a.name in cycle), None)
        where = f"line {line}: " if line else ""
        loop = " → ".join(cycle)
        raise TemplateError(
            source, [f"{where}a cycle of causes: {loop} (an alarm would keep itself raised)"]
        )
    return template
