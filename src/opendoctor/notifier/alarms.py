"""Alarm management: what the Aodh-compatible API does, over the store and the index.

The store is written first and the index changes only once the write succeeded, so
the notification path never fires an alarm the database does not hold.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Sequence
from typing import Any

from opendoctor.core.alarms import (
    CREATION,
    DELETION,
    RULE_CHANGE,
    STATE_TRANSITION,
    Alarm,
    Change,
    HistoryEntry,
    Transition,
)
from opendoctor.core.egress import EgressPolicy
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.model import new_id
from opendoctor.core.query import Compare, Node, Order, both, only_own
from opendoctor.notifier.alarm_query import matcher, ordered, page
from opendoctor.notifier.index import AlarmIndex
from opendoctor.notifier.rules import REASON_MANUAL, STATES, AlarmBody, to_api
from opendoctor.store.alarms import AlarmStore, StateChanged
from opendoctor.store.paging import UnknownMarker

# What a PUT may change without it counting as a rule change.
_NOT_RULE = frozenset({"state", "state_reason", "state_timestamp", "timestamp"})


SYNC_OVERLAP = 5.0
SYNC_ROWS = 10_000  # history rows read per sync at most; the next one goes on from there


class AlarmService:
    def __init__(
        self,
        store: AlarmStore,
        index: AlarmIndex,
        egress: EgressPolicy | None = None,
        max_per_project: int = 1000,
    ) -> None:
        self.store = store
        self.index = index
        self.egress = egress if egress is not None else EgressPolicy()
        self.max_per_project = max_per_project
        # Definition changes are serialised so that the store and the index see them in
        # the same order; the notification path (record_transitions) does not take it.
        self._lock = asyncio.Lock()
        self._last = 0.0
        # Newest history time taken up by `sync`: of every change, and of the definition
        # changes (the latter never behind the former).
        self._synced = 0.0
        self._defined = 0.0
        self._seen: dict[str, float] = {}  # history rows already acted on
        self._sync_lock = asyncio.Lock()
        self._sync_began = 0.0  # when the last `sync` of every change began
        self._define_began = 0.0  # ... of definition changes at least

    def _now(self) -> float:
        # Strictly increasing, so history sorted by time keeps the order of changes.
        self._last = max(time.time(), self._last + 1e-6)
        return self._last

    async def load(self) -> int:
        """Fill the index from the store (at start-up); returns the number of alarms."""
        self._synced = self._defined = time.time()
        for alarm in await self.store.load_all():
            self.index.add(alarm)
        return len(self.index)

    async def sync(self, states: bool = True) -> int:
        """Take up the alarm changes other processes made (created, changed, fired,
        deleted), from their history rows; returns how many alarms were reloaded.

        Without `states`, only definition changes (created, changed, deleted): the state
        transitions, the bulk of the history (every alarm fired, here and elsewhere), are
        left to the next sync with them, which reads them from where it last stopped.

        Rows are read again over a window of `SYNC_OVERLAP` seconds, because another
        process's clock and commit order may put a row slightly in our past; each row is
        acted on once.
        """
        since = self._synced if states else self._defined
        started = time.time()
        rows = await self.store.changes_since(since - SYNC_OVERLAP, SYNC_ROWS, states=states)
        changed: dict[str, None] = {}
        newest = since
        for row in rows:
            if row.event_id not in self._seen:
                self._seen[row.event_id] = row.timestamp
                if not self._took_state(row):
                    changed[row.alarm_id] = None
            newest = max(newest, row.timestamp)
        if len(rows) < SYNC_ROWS:
            # Everything there was is read: the window moves on with the clock. Left at
            # the newest row's time, it stood still while nothing changed, and every
            # sync read the last SYNC_OVERLAP seconds of rows again: after a storm, ten
            # thousand rows a sync, for as long as the alarms stayed quiet.
            newest = max(newest, started)
        if states:
            self._synced = newest
        # Every definition change up to `newest` was read (with or without the states).
        self._defined = max(self._defined, newest)
        horizon = min(self._synced, self._defined) - 2 * SYNC_OVERLAP
        self._seen = {k: at for k, at in self._seen.items() if at > horizon}
        if changed:
            async with self._lock:
                # One query for the lot: a sync after thousands of alarms were created
                # elsewhere must not read them one by one.
                stored = await self.store.get_many(list(changed))
                for alarm_id in changed:
                    alarm = stored.get(alarm_id)
                    if alarm is None:
                        self.index.remove(alarm_id)
                    else:
                        self.index.add(alarm)
        return len(changed)

    def _took_state(self, change: Change) -> bool:
        """Apply a state change of a known alarm in place (the most common change: alarms
        fire and are re-armed), rather than read the alarm again."""
        state = change.new_state()
        alarm = self.index.get(change.alarm_id) if state is not None else None
        if alarm is None or state is None:
            return False
        if change.timestamp > alarm.state_timestamp:
            alarm.state, alarm.state_reason = state
            alarm.state_timestamp = change.timestamp
        return True

    async def sync_since(self, moment: float, states: bool = True) -> None:
        """Make sure a `sync` that began at or after `moment` has finished: every alarm
        change committed before then is in the index. Callers at the same time share one
        sync (the first one's covers those queued behind it).

        Without `states`, every definition change (created, changed, deleted) committed
        before then is, and states are left to a sync with them (what the notification
        path asks before each fault: it checks the states of the alarms it would skip in
        the store, `refresh_states`). A sync with states covers those without."""
        async with self._sync_lock:
            began = self._sync_began if states else max(self._sync_began, self._define_began)
            if began >= moment:
                return
            if states:
                self._sync_began = time.time()
            else:
                self._define_began = time.time()
            await self.sync(states)

    async def refresh_states(self, alarms: Sequence[Alarm]) -> None:
        """Bring these alarms' states up to date from the store (another process may have
        re-armed them since the last `sync`)."""
        stored = await self.store.states([a.alarm_id for a in alarms])
        for alarm in alarms:
            state = stored.get(alarm.alarm_id)
            if state is not None and state[2] > alarm.state_timestamp:
                alarm.state, alarm.state_reason, alarm.state_timestamp = state

    def _owner(self, body: AlarmBody, identity: Identity, current: Alarm | None) -> tuple[str, str]:
        project = body.project_id or (current.project_id if current else identity.project_id)
        user = body.user_id or (current.user_id if current else identity.user_id)
        if not identity.is_admin:
            if project != identity.project_id:
                raise RequestError(403, "only an admin may act for another project", "project_id")
            # Clients PUT back the owner they read, so the current owner is fine as well.
            allowed = {identity.user_id, current.user_id if current else identity.user_id}
            if body.user_id and body.user_id not in allowed:
                raise RequestError(403, "only an admin may act for another user", "user_id")
        return project, user

    def _entry(
        self, alarm: Alarm, type_: str, detail: dict[str, Any], identity: Identity, now: float
    ) -> HistoryEntry:
        return HistoryEntry(
            alarm_id=alarm.alarm_id,
            type=type_,
            detail=detail,
            timestamp=now,
            project_id=identity.project_id,
            user_id=identity.user_id,
            on_behalf_of=alarm.project_id,
            severity=alarm.severity,
        )

    def _check_egress(self, body: AlarmBody) -> None:
        """Refused before anything is kept: an action at an address the egress policy
        does not let opendoctor call (names are checked again when called)."""
        for field in ("alarm_actions", "ok_actions", "insufficient_data_actions"):
            for i, url in enumerate(getattr(body, field)):
                problem = self.egress.url_problem(url)
                if problem is not None:
                    raise RequestError(400, f"{url}: {problem}", f"{field}[{i}]")

    async def create(self, body: AlarmBody, identity: Identity) -> Alarm:
        self._check_egress(body)
        project, user = self._owner(body, identity, None)
        now = self._now()
        alarm = body.to_alarm(new_id(), project, user, body.state or "insufficient data", now)
        entry = self._entry(alarm, CREATION, to_api(alarm), identity, now)
        async with self._lock:
            held = sum(1 for a in self.index if a.project_id == project)
            if held >= self.max_per_project:
                # Aodh answers a quota the same way. Every alarm is matched on the hot
                # path and may fan out: one project must not crowd the others out.
                raise RequestError(
                    403,
                    f"project {project} has {held} alarms, the most it may have "
                    "(notifier.max_alarms_per_project): delete some first",
                    "project_id",
                )
            await self.store.insert(alarm, [entry])
            self.index.add(alarm)
        return alarm

    def get(self, alarm_id: str, identity: Identity) -> Alarm:
        alarm = self.index.get(alarm_id)
        # Another project's alarm answers like a missing one: its existence is not shared.
        if alarm is None or not identity.can_see(alarm.project_id):
            raise RequestError(404, f"alarm {alarm_id} not found", "alarm_id")
        return alarm

    async def update(self, alarm_id: str, body: AlarmBody, identity: Identity) -> Alarm:
        """Replace an alarm's definition (PUT), keeping its id and, unless the body sets
        another, its state.

        The notifier changes states without this lock (it must not wait on the API). So
        the definition is written without the state, and a state in the body that is the
        one read (clients PUT back what they GET) changes nothing; a state the body does
        change is written only if nobody changed it meanwhile (else 409, nothing written).
        Whatever state the notifier set while the write was under way is kept."""
        self._check_egress(body)
        async with self._lock:
            old = self.get(alarm_id, identity)
            read = old.state  # the notifier may change `old` itself while the write runs
            project, user = self._owner(body, identity, old)
            now = self._now()
            state = body.state or read
            setting = state != read
            new = body.to_alarm(alarm_id, project, user, state, now)
            if setting:
                new.state_reason = REASON_MANUAL
            else:
                new.state_reason, new.state_timestamp = old.state_reason, old.state_timestamp
            before, after = to_api(old), to_api(new)
            changed = {k: v for k, v in after.items() if k not in _NOT_RULE and before.get(k) != v}
            history = []
            if changed:
                history.append(self._entry(new, RULE_CHANGE, changed, identity, now))
            if setting:
                detail = {"state": new.state, "transition_reason": new.state_reason}
                history.append(self._entry(new, STATE_TRANSITION, detail, identity, now))
            if not history:
                return old  # nothing changed: an idempotent PUT writes nothing
            try:
                await self.store.update(new, history, state_was=read if setting else None)
            except StateChanged as exc:
                raise RequestError(
                    409,
                    f"the alarm's state changed to {exc.state!r} meanwhile: nothing was "
                    "changed; read it and send the change again",
                    "state",
                ) from exc
            # In the same turn of the loop as the swap: nothing can slip between them.
            current = self.index.get(alarm_id)
            if current is not None and current.state != read:
                new.state = current.state
                new.state_reason, new.state_timestamp = (
                    current.state_reason,
                    current.state_timestamp,
                )
            self.index.add(new)
            return new

    async def delete(self, alarm_id: str, identity: Identity) -> None:
        async with self._lock:
            alarm = self.get(alarm_id, identity)
            now = self._now()
            entry = self._entry(alarm, DELETION, to_api(alarm), identity, now)
            await self.store.delete(alarm_id, [entry])
            self.index.remove(alarm_id)

    def get_state(self, alarm_id: str, identity: Identity) -> str:
        return self.get(alarm_id, identity).state

    async def set_state(self, alarm_id: str, state: str, identity: Identity) -> str:
        """Set the state by hand. Records the transition; fires no actions (as Aodh)."""
        if state not in STATES:
            raise RequestError(400, f"state must be one of {', '.join(map(repr, STATES))}", "state")
        async with self._lock:
            alarm = self.get(alarm_id, identity)
            now = self._now()
            transition = Transition(
                alarm_id=alarm_id,
                previous=alarm.state,
                current=state,
                reason=REASON_MANUAL,
                reason_data={},
                timestamp=now,
                project_id=identity.project_id,
                user_id=identity.user_id,
                severity=alarm.severity,
                on_behalf_of=alarm.project_id,
            )
            await self.store.record_transitions([transition])
            alarm.state, alarm.state_reason, alarm.state_timestamp = state, REASON_MANUAL, now
            return state

    async def history(
        self,
        alarm_id: str,
        identity: Identity,
        node: Node | None = None,
        order: Order | None = None,
        limit: int = 100,
        marker: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """One alarm's history. A deleted alarm's history is kept; an admin reads it here
        as well (Aodh answers 404 here and serves it only through the history query)."""
        one = Compare("=", "alarm_id", alarm_id)
        if self.index.get(alarm_id) is not None or not identity.is_admin:
            self.get(alarm_id, identity)  # 404 for an alarm the caller may not see
        elif not await self.store.query_history(one, limit=1):
            raise RequestError(404, f"alarm {alarm_id} not found", "alarm_id")
        return await self.query_history(identity, both(one, node), order, limit, marker, "q")

    async def record_transitions(self, transitions: Sequence[Transition]) -> None:
        """Persist state changes the notification path already applied to its Alarm objects."""
        await self.store.record_transitions(transitions)

    def query(
        self,
        identity: Identity,
        node: Node | None,
        order: Order | None = None,
        limit: int | None = None,
        marker: str | None = None,
        where: str = "filter",
    ) -> builtins.list[Alarm]:
        """The alarms `node` holds for among those the caller may see (an admin: every
        project's), in `order` (default: newest first), at most `limit`, from the one after
        `marker` (an alarm id). A caller who is not an admin and names another project in
        the query is refused (403, naming `where`)."""
        if not identity.is_admin:
            only_own(node, "project_id", identity.project_id, where)
        holds = matcher(node)
        seen = (a for a in self.index if identity.can_see(a.project_id) and holds(a))
        return page(ordered(seen, order or []), limit, marker)

    async def query_history(
        self,
        identity: Identity,
        node: Node | None,
        order: Order | None = None,
        limit: int | None = None,
        marker: str | None = None,
        where: str = "filter",
    ) -> builtins.list[dict[str, Any]]:
        """History rows, deleted alarms' included, in the database: an admin's query runs
        over every project's; anyone else's over the changes made on behalf of their own
        project (Aodh's rule), whoever made them."""
        if not identity.is_admin:
            only_own(node, "on_behalf_of", identity.project_id, where)
            node = both(Compare("=", "on_behalf_of", identity.project_id), node)
        try:
            return await self.store.query_history(node, order, limit, marker)
        except UnknownMarker:
            raise RequestError(
                400, f"no history entry {marker} in this listing", "marker"
            ) from None
