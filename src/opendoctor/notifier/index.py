"""Which alarms an event may fire, without scanning all alarms.

Alarms are grouped by their exact event_type; inside a group, each alarm is filed
under the value of one of its `eq` terms (say `traits.instance_id == X`), so an event
only meets the alarms keyed by its own trait values plus the few that have no usable
`eq` term. Alarms whose event_type is a pattern form groups per pattern; which
patterns match an event type is worked out once and cached.

The index narrows; `query_holds` decides. Candidates are always checked in full, so
the keys only have to be complete (a term that holds is always found under the key
the event produces), never exact.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase

from opendoctor.core.alarms import Alarm
from opendoctor.core.model import NotificationEvent
from opendoctor.core.terms import event_key, is_pattern
from opendoctor.notifier.rules import query_holds

# (trait name, comparison mode): terms in one slot turn an event's trait into the same key.
_SlotId = tuple[str, str]
_Slot = dict[Hashable, dict[str, Alarm]]
# Whose alarms an event may fire: its own project's, or for an event of no project
# (a switch, a port) the infrastructure projects'.
Scope = str | frozenset[str]

# Random event types must not grow the pattern cache without bound.
_CACHE_LIMIT = 4096


class _Group:
    """The alarms of one event_type (or one event_type pattern)."""

    __slots__ = ("keyed", "loose")

    def __init__(self) -> None:
        self.keyed: dict[_SlotId, _Slot] = {}
        self.loose: dict[str, Alarm] = {}

    def __bool__(self) -> bool:
        return bool(self.keyed or self.loose)

    def insert(self, alarm: Alarm) -> tuple[_SlotId | None, list[Hashable]]:
        best: tuple[tuple[int, bool], _SlotId, list[Hashable]] | None = None
        for term in alarm.query:
            if term.op != "eq" or term.trait is None:
                continue
            slot_id = (term.trait, term.mode)
            keys = term.keys()
            slot = self.keyed.get(slot_id)
            crowd = 0 if slot is None else max(len(slot.get(k, ())) for k in keys)
            # The least crowded key keeps events cheap (an alarm on state == error plus
            # instance_id == X goes under X); among equals, reuse a slot so that an event
            # computes few keys.
            rank = (crowd, slot is None)
            if best is None or rank < best[0]:
                best = (rank, slot_id, keys)
        if best is None:
            self.loose[alarm.alarm_id] = alarm
            return None, []
        _, slot_id, keys = best
        slot = self.keyed.setdefault(slot_id, {})
        for key in keys:
            slot.setdefault(key, {})[alarm.alarm_id] = alarm
        return slot_id, keys

    def discard(self, alarm_id: str, slot_id: _SlotId | None, keys: list[Hashable]) -> None:
        if slot_id is None:
            self.loose.pop(alarm_id, None)
            return
        slot = self.keyed[slot_id]
        for key in keys:
            bucket = slot[key]
            del bucket[alarm_id]
            if not bucket:
                del slot[key]
        if not slot:
            del self.keyed[slot_id]

    def collect(self, event: NotificationEvent, project: Scope, out: list[Alarm]) -> None:
        traits = event.traits
        for (name, mode), slot in self.keyed.items():
            trait = traits.get(name)
            if trait is None:
                continue
            key = event_key(mode, trait.type, trait.value)
            if key is None:
                continue
            found = slot.get(key)
            if found:
                _check(found.values(), event, project, out)
        if self.loose:
            _check(self.loose.values(), event, project, out)


def _check(
    alarms: Iterable[Alarm], event: NotificationEvent, project: Scope, out: list[Alarm]
) -> None:
    for alarm in alarms:
        if (
            alarm.enabled
            and (
                alarm.project_id == project
                if isinstance(project, str)
                else alarm.project_id in project
            )
            and query_holds(alarm, event)
        ):
            out.append(alarm)


@dataclass(slots=True)
class _Place:
    group_key: str
    wildcard: bool
    slot_id: _SlotId | None
    keys: list[Hashable]


class AlarmIndex:
    """All alarms in memory, filed so that `match` costs O(alarms that could match)."""

    def __init__(self, infrastructure_projects: Iterable[str] = ("admin",)) -> None:
        # A tenant must not hear of the infrastructure (which switch failed) through an
        # alarm whose query happens to match an event that names no project.
        self.infrastructure_projects = frozenset(infrastructure_projects)
        self._alarms: dict[str, Alarm] = {}
        self._places: dict[str, _Place] = {}
        self._exact: dict[str, _Group] = {}
        self._patterns: dict[str, _Group] = {}
        self._pattern_cache: dict[str, list[_Group]] = {}

    def __len__(self) -> int:
        return len(self._alarms)

    def __iter__(self) -> Iterator[Alarm]:
        return iter(list(self._alarms.values()))

    def __contains__(self, alarm_id: object) -> bool:
        return alarm_id in self._alarms

    def get(self, alarm_id: str) -> Alarm | None:
        return self._alarms.get(alarm_id)

    def add(self, alarm: Alarm) -> None:
        """File an alarm (replacing one with the same id)."""
        self.remove(alarm.alarm_id)
        wildcard = is_pattern(alarm.event_type)
        groups = self._patterns if wildcard else self._exact
        group = groups.get(alarm.event_type)
        if group is None:
            group = groups[alarm.event_type] = _Group()
            if wildcard:
                self._pattern_cache.clear()
        slot_id, keys = group.insert(alarm)
        self._alarms[alarm.alarm_id] = alarm
        self._places[alarm.alarm_id] = _Place(alarm.event_type, wildcard, slot_id, keys)

    def remove(self, alarm_id: str) -> Alarm | None:
        alarm = self._alarms.pop(alarm_id, None)
        if alarm is None:
            return None
        place = self._places.pop(alarm_id)
        groups = self._patterns if place.wildcard else self._exact
        group = groups[place.group_key]
        group.discard(alarm_id, place.slot_id, place.keys)
        if not group:
            del groups[place.group_key]
            if place.wildcard:
                self._pattern_cache.clear()
        return alarm

    def match(self, event: NotificationEvent) -> list[Alarm]:
        """Enabled alarms of the event's project that match; for an event of no project
        (a switch, a port), those of the infrastructure projects only."""
        project: Scope = event.project_id or self.infrastructure_projects
        out: list[Alarm] = []
        group = self._exact.get(event.event_type)
        if group is not None:
            group.collect(event, project, out)
        if self._patterns:
            for group in self._pattern_groups(event.event_type):
                group.collect(event, project, out)
        return out

    def _pattern_groups(self, event_type: str) -> list[_Group]:
        groups = self._pattern_cache.get(event_type)
        if groups is None:
            if len(self._pattern_cache) >= _CACHE_LIMIT:
                self._pattern_cache.clear()
            groups = [g for p, g in self._patterns.items() if fnmatchcase(event_type, p)]
            self._pattern_cache[event_type] = groups
        return groups
