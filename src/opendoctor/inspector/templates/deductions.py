"""What the rule engine deduces and does, reference-counted so that it can be undone.

`Deductions` is the half of the `Engine` that applies a match's actions and undoes them
when the match stops holding: deduced alarms, states and causal edges count their
reasons and go with the last one; notify, mark_down and run_workflow fire once, when
their first reason appears, into the `Plan` handed back to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opendoctor.inspector.graph import CAUSES, ON, TopologyGraph, Vertex, make_key
from opendoctor.inspector.graph.history import AlarmHistory
from opendoctor.inspector.graph.states import Category, priority
from opendoctor.inspector.templates.model import Clause, Scenario, Template
from opendoctor.inspector.templates.paths import Reach
from opendoctor.inspector.templates.schema import (
    AddCausalRelationship,
    MarkDown,
    Notify,
    RaiseAlarm,
    RunWorkflow,
    SetState,
)

ALARM = Category.ALARM.value
RESOURCE = Category.RESOURCE.value
GRAPH_ACTIONS = (RaiseAlarm, SetState, AddCausalRelationship)


# (template, scenario, clause, the vertex keys bound to the clause's entities)
MatchKey = tuple[str, int, int, tuple[str, ...]]
Binding = dict[str, Vertex]
Token = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class NotifyEffect:
    target: str  # vertex key
    event_type: str
    state: str
    cause: str | None  # key of the alarm the match holds
    template: str


@dataclass(frozen=True, slots=True)
class WorkflowEffect:
    workflow: str
    target: str | None
    params: dict[str, str]
    binding: dict[str, str]
    template: str


@dataclass(slots=True)
class Plan:
    """What the engine wants done outside the graph, in the order it was decided."""

    notify: list[NotifyEffect] = field(default_factory=list)
    mark_down: list[str] = field(default_factory=list)
    workflows: list[WorkflowEffect] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.notify or self.mark_down or self.workflows)

    def merge(self, other: Plan) -> None:
        self.notify += other.notify
        self.mark_down += other.mark_down
        self.workflows += other.workflows


@dataclass(slots=True)
class Match:
    key: MatchKey
    binding: dict[str, str]
    tokens: list[Token]


def _worst(counts: dict[str, int]) -> str:
    """The deduced state with the highest priority among those with reasons."""
    return max(counts, key=lambda st: priority(RESOURCE, st))


def deduced_key(name: str, target: str) -> str:
    return make_key("alarm", f"{name}@{target}")


class Deductions:
    """The engine's bookkeeping of what its matches did (see `Engine` for the state)."""

    graph: TopologyGraph
    history: AlarmHistory
    matches: dict[MatchKey, Match]
    by_vertex: dict[str, set[MatchKey]]
    alarms: dict[str, int]
    causes: dict[tuple[str, str], int]
    states: dict[str, dict[str, int]]
    once: dict[tuple[Any, ...], int]
    dirty: set[str]
    _plan: Plan
    _owners_first: bool
    _deferred: list[tuple[Match, Template, Any, str | None]]
    _state_sensitive: bool
    _wide: bool
    _reach: Reach
    _near: set[str]
    _acting: bool
    acts: Callable[[Iterable[str]], bool] | None

    # -- actions ------------------------------------------------------------------------

    def _apply(self, mk: MatchKey, t: Template, s: Scenario, c: Clause, b: Binding) -> None:
        keys = {e: v.key for e, v in b.items()}
        match = Match(mk, keys, [])
        self.matches[mk] = match
        by_vertex = self.by_vertex
        for vk in keys.values():  # bindings are injective: no key twice
            owners = by_vertex.get(vk)
            if owners is None:
                by_vertex[vk] = {mk}
            else:
                owners.add(mk)
        alarm_entity = c.alarm_entity
        self._acting = True
        try:
            if self._owners_first:
                for action in s.actions:
                    if isinstance(action, GRAPH_ACTIONS):
                        self._deferred.append((match, t, action, alarm_entity))
                    else:
                        self._do(t, action, keys, match, alarm_entity)
            else:
                for action in s.actions:
                    self._do(t, action, keys, match, alarm_entity)
        finally:
            self._acting = False

    def _do(
        self, t: Template, action: Any, keys: dict[str, str], match: Match, alarm_entity: str | None
    ) -> None:
        if isinstance(action, RaiseAlarm):
            target = keys[action.target]
            key = deduced_key(action.name, target)
            match.tokens.append(("alarm", key))
            if self._count(self.alarms, key, +1) == 1:
                alarm = self.graph.upsert(
                    ALARM,
                    "alarm",
                    key.removeprefix("alarm:"),
                    name=action.name,
                    raw_state=action.severity,
                    props={
                        "deduced": True,
                        "template": t.name,
                        "resource": target,
                        "caused_by": keys.get(action.causing_alarm or ""),
                    },
                )
                self.graph.link(key, target, ON)
                self.history.record("raised", alarm, target, keys.get(action.causing_alarm or ""))
                self.dirty.add(key)
            if action.causing_alarm is not None:
                self._cause(keys[action.causing_alarm], key, match)
        elif isinstance(action, AddCausalRelationship):
            self._cause(keys[action.source], keys[action.target], match)
        elif isinstance(action, SetState):
            target = keys[action.target]
            match.tokens.append(("state", (target, action.state)))
            counts = self.states.setdefault(target, {})
            counts[action.state] = counts.get(action.state, 0) + 1
            self._restate(target)
        elif isinstance(action, Notify):
            cause = keys[action.cause] if action.cause else keys.get(alarm_entity or "")
            told = ("notify", keys[action.target], action.event_type, action.state)
            if self._once(told, match) and self._ours(keys):
                self._plan.notify.append(
                    NotifyEffect(
                        keys[action.target], action.event_type, action.state, cause, t.name
                    )
                )
        elif isinstance(action, MarkDown):
            if self._once(("mark_down", keys[action.target]), match) and self._ours(keys):
                self._plan.mark_down.append(keys[action.target])
        elif isinstance(action, RunWorkflow):
            wf_target = keys[action.target] if action.target else None
            once = ("workflow", action.workflow, wf_target or match.key)
            if self._once(once, match) and self._ours(keys):
                self._plan.workflows.append(
                    WorkflowEffect(
                        action.workflow, wf_target, dict(action.params), dict(keys), t.name
                    )
                )

    @staticmethod
    def _count(counts: dict[Any, int], key: Any, delta: int) -> int:
        n = counts.get(key, 0) + delta
        if n:
            counts[key] = n
        else:
            counts.pop(key, None)
        return n

    def _ours(self, keys: dict[str, str]) -> bool:
        """Whether this process carries out the match's effects on the world (scaled
        out, one inspector of those that deduce the same does)."""
        return self.acts is None or self.acts(keys.values())

    def _once(self, key: tuple[Any, ...], match: Match) -> bool:
        match.tokens.append(("once", key))
        return self._count(self.once, key, +1) == 1

    def _cause(self, source: str, target: str, match: Match) -> None:
        match.tokens.append(("cause", (source, target)))
        if self._count(self.causes, (source, target), +1) == 1:
            self.graph.link(source, target, CAUSES)
            self.dirty.add(target)

    def _restate(self, key: str) -> None:
        vertex = self.graph.get(key)
        if vertex is None:
            return
        counts = self.states.get(key)
        best = _worst(counts) if counts else None
        if best != vertex.deduced_state:
            vertex.deduced_state = best
            if self._state_sensitive:
                self.dirty.add(key)

    def _undo(self, mk: MatchKey, held: list[Any] | None = None) -> None:
        match = self.matches.pop(mk)
        for vk in set(match.binding.values()):
            owners = self.by_vertex.get(vk)
            if owners is not None:
                owners.discard(mk)
                if not owners:
                    del self.by_vertex[vk]
        self._acting = True
        try:
            for kind, value in reversed(match.tokens):
                if kind == "alarm":
                    if self._count(self.alarms, value, -1) == 0:
                        self._retract(value)
                elif kind == "cause":
                    if self._count(self.causes, value, -1) == 0:
                        self.graph.unlink(value[0], value[1], CAUSES)
                        self.dirty.add(value[1])
                elif kind == "state":
                    target, state = value
                    counts = self.states.get(target, {})
                    self._count(counts, state, -1)
                    if not counts:
                        self.states.pop(target, None)
                    self._restate(target)
                elif held is not None:
                    held.append(value)
                else:
                    self._count(self.once, value, -1)
        finally:
            self._acting = False

    def _retract(self, key: str) -> None:
        alarm = self.graph.get(key)
        if alarm is None:
            return
        props = alarm.props or {}
        self.history.record("cleared", alarm, props.get("resource"), props.get("caused_by"))
        reach = self._wide or (self._reach and self._reach.about(alarm))
        neighbors = [n.key for n in self.graph.neighbors(key, direction="both")] if reach else []
        self.graph.remove(key)
        # Matches through the alarm go when it is re-evaluated (it is gone by then).
        self.dirty.add(key)
        if self._wide:
            self.dirty.update(neighbors)
        else:
            self._near.update(neighbors)

    # -- for the API and the tests ------------------------------------------------------

    def marked(self) -> set[str]:
        """Vertices some rule currently wants marked down."""
        return {key[1] for key in self.once if key[0] == "mark_down"}

    def snapshot(self) -> dict[str, Any]:
        """Everything the engine deduced, in a form two engines can be compared by."""
        alarms = {}
        for key in self.alarms:
            v = self.graph.get(key)
            if v is not None:
                alarms[key] = (v.name, v.raw_state, (v.props or {}).get("resource"))
        return {
            "matches": sorted(self.matches),
            "alarms": alarms,
            "causes": sorted(self.causes),
            "states": {k: _worst(c) for k, c in self.states.items() if c},
            "once": sorted(self.once, key=repr),
        }
