"""Persistence of alarms and their history (Aodh's alarm and alarm_history)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

import orjson
from sqlalchemy import Table, delete, insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from opendoctor.core.alarms import STATE_TRANSITION, Alarm, Change, HistoryEntry, Transition
from opendoctor.core.model import iso, new_ids
from opendoctor.core.query import Compare, Node, Order
from opendoctor.core.terms import compile_rule
from opendoctor.infra.group_read import GroupRead
from opendoctor.store.bulk import insert_rows, update_rows
from opendoctor.store.db import Database, one_of
from opendoctor.store.paging import UnknownMarker, after_row
from opendoctor.store.query_sql import ordering, sort_keys, where
from opendoctor.store.tables import NOT_STATE_TRANSITION, AlarmHistoryRow, AlarmRow

ALARMS = cast(Table, AlarmRow.__table__)
HISTORY = cast(Table, AlarmHistoryRow.__table__)
# What a history query filters and sorts on: every column, by its API name.
HISTORY_COLUMNS = {column.name: column for column in HISTORY.c if column.name != "writer"}
HISTORY_ORDER: Order = [("timestamp", True)]  # newest first, as Aodh


def _history_row(entry: HistoryEntry, writer: str) -> dict[str, Any]:
    return {
        "writer": writer,
        "event_id": entry.event_id,
        "alarm_id": entry.alarm_id,
        "type": entry.type,
        "detail": orjson.dumps(entry.detail).decode(),
        "timestamp": entry.timestamp,
        "project_id": entry.project_id,
        "user_id": entry.user_id,
        "on_behalf_of": entry.on_behalf_of,
        "severity": entry.severity,
    }


_STATE_COLUMNS = ("state", "state_reason", "state_timestamp")


class StateChanged(Exception):
    """An alarm's state changed between reading it and writing a new one."""

    def __init__(self, alarm_id: str, state: str) -> None:
        super().__init__(f"alarm {alarm_id} is {state} now")
        self.state = state


def _row(alarm: Alarm) -> dict[str, Any]:
    return {
        "alarm_id": alarm.alarm_id,
        "name": alarm.name,
        "description": alarm.description,
        "type": alarm.type,
        "project_id": alarm.project_id,
        "user_id": alarm.user_id,
        "enabled": alarm.enabled,
        "state": alarm.state,
        "state_reason": alarm.state_reason,
        "state_timestamp": alarm.state_timestamp,
        "timestamp": alarm.timestamp,
        "severity": alarm.severity,
        "repeat_actions": alarm.repeat_actions,
        "alarm_actions": list(alarm.alarm_actions),
        "ok_actions": list(alarm.ok_actions),
        "insufficient_data_actions": list(alarm.insufficient_data_actions),
        "rule": alarm.rule(),
    }


def _alarm(row: RowMapping) -> Alarm:
    event_type, terms = compile_rule(row["rule"])
    return Alarm(
        alarm_id=row["alarm_id"],
        name=row["name"],
        description=row["description"],
        type=row["type"],
        project_id=row["project_id"],
        user_id=row["user_id"],
        enabled=bool(row["enabled"]),
        state=row["state"],
        state_reason=row["state_reason"],
        state_timestamp=row["state_timestamp"],
        timestamp=row["timestamp"],
        severity=row["severity"],
        repeat_actions=bool(row["repeat_actions"]),
        alarm_actions=list(row["alarm_actions"]),
        ok_actions=list(row["ok_actions"]),
        insufficient_data_actions=list(row["insufficient_data_actions"]),
        event_type=event_type,
        query=terms,
    )


def _history_api(row: RowMapping) -> dict[str, Any]:
    """A history row in Aodh's JSON shape."""
    return {
        "event_id": row["event_id"],
        "alarm_id": row["alarm_id"],
        "type": row["type"],
        "detail": row["detail"],
        "timestamp": iso(row["timestamp"]),
        "project_id": row["project_id"],
        "user_id": row["user_id"],
        "on_behalf_of": row["on_behalf_of"],
        "severity": row["severity"],
    }


class AlarmStore:
    """Alarms and their history in the database. Every write is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Names the history rows written here, which `changes_since` leaves out: what
        # this process changed, it applied as it wrote. In a storm a sync read back ten
        # thousand of its own transitions a second.
        self.writer = uuid.uuid4().hex
        # The notifier asks for the states of each fault's alarms before it fires them;
        # a storm's faults arriving together share one query (infra/group_read.py).
        self._states: GroupRead[str, tuple[str, str, float]] = GroupRead(self._states_now)

    async def load_all(self) -> list[Alarm]:
        async with self.db.engine.connect() as conn:
            result = await conn.execute(select(ALARMS))
            return [_alarm(row) for row in result.mappings()]

    async def get_many(self, alarm_ids: Sequence[str]) -> dict[str, Alarm]:
        """The stored alarms among these ids, by id."""
        out: dict[str, Alarm] = {}
        async with self.db.engine.connect() as conn:
            for i in range(0, len(alarm_ids), 1000):  # bounded IN lists
                chunk = list(alarm_ids[i : i + 1000])
                result = await conn.execute(select(ALARMS).where(ALARMS.c.alarm_id.in_(chunk)))
                out.update((a.alarm_id, a) for a in map(_alarm, result.mappings()))
        return out

    async def states(self, alarm_ids: Sequence[str]) -> dict[str, tuple[str, str, float]]:
        """alarm id -> (state, reason, timestamp) as stored, for the ids that exist (one
        query, shared with the callers asking at the same time)."""
        return await self._states.read(alarm_ids)

    async def _states_now(self, alarm_ids: set[str]) -> dict[str, tuple[str, str, float]]:
        query = select(
            ALARMS.c.alarm_id, ALARMS.c.state, ALARMS.c.state_reason, ALARMS.c.state_timestamp
        ).where(one_of(self.db, ALARMS.c.alarm_id, alarm_ids))
        async with self.db.engine.connect() as conn:
            result = await conn.execute(query)
            return {r[0]: (r[1], r[2], r[3]) for r in result.all()}

    async def insert(self, alarm: Alarm, history: Sequence[HistoryEntry]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(ALARMS), [_row(alarm)])
            await _add_history(conn, history, self.writer)

    async def update(
        self, alarm: Alarm, history: Sequence[HistoryEntry], state_was: str | None = None
    ) -> None:
        """Write a new definition. Its state only with `state_was`, and only if the stored
        state is still that (compare and set): a state the notifier wrote meanwhile is
        never overwritten; `StateChanged` says it was, and nothing is written. Without
        `state_was`, the state columns are left to whoever else writes them."""
        values = _row(alarm)
        del values["alarm_id"]
        where = ALARMS.c.alarm_id == alarm.alarm_id
        if state_was is None:
            for column in _STATE_COLUMNS:
                del values[column]
        else:
            where = where & (ALARMS.c.state == state_was)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(update(ALARMS).where(where).values(**values))
            if result.rowcount == 0:
                now = await conn.scalar(
                    select(ALARMS.c.state).where(ALARMS.c.alarm_id == alarm.alarm_id)
                )
                if now is None:
                    raise KeyError(alarm.alarm_id)
                raise StateChanged(alarm.alarm_id, now)
            await _add_history(conn, history, self.writer)

    async def delete(self, alarm_id: str, history: Sequence[HistoryEntry]) -> None:
        """Delete an alarm; its history stays (as in Aodh) and gains the deletion."""
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(ALARMS).where(ALARMS.c.alarm_id == alarm_id))
            await _add_history(conn, history, self.writer)

    async def changes_since(
        self, since: float, limit: int = 10_000, states: bool = True
    ) -> list[Change]:
        """Every change recorded after `since` by another process (or by none that says
        so: rows from before writers were recorded), oldest first, for it to be picked up
        here.

        Without `states`, state transitions are left out: creations, rule changes and
        deletions only. Those are few, while the transitions grow with every alarm any
        notifier fires; they are read through an index of their own
        (`ix_alarm_history_definitions`), whatever the transitions around them."""
        query = select(
            HISTORY.c.event_id,
            HISTORY.c.alarm_id,
            HISTORY.c.timestamp,
            HISTORY.c.type,
            HISTORY.c.detail,
        ).where(HISTORY.c.timestamp > since, HISTORY.c.writer.is_distinct_from(self.writer))
        if not states:
            query = query.where(text(NOT_STATE_TRANSITION))
        query = query.order_by(HISTORY.c.timestamp).limit(limit)
        async with self.db.engine.connect() as conn:
            result = await conn.execute(query)
            return [Change(r[0], r[1], r[2], r[3], r[4]) for r in result.all()]

    async def history(self, alarm_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The alarm's history in Aodh's shape, newest first."""
        return await self.query_history(Compare("=", "alarm_id", alarm_id), limit=limit)

    async def query_history(
        self,
        node: Node | None,
        order: Order | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[dict[str, Any]]:
        """History rows that `node` holds for (deleted alarms' too), in Aodh's shape, in
        `order` (default: newest first), at most `limit`, from the row after the one
        whose event id is `marker` (`UnknownMarker` if the query does not hold it)."""
        keys = sort_keys(order or HISTORY_ORDER, HISTORY_COLUMNS, "event_id")
        conditions = [] if node is None else [where(node, HISTORY_COLUMNS, {"timestamp"})]
        async with self.db.engine.connect() as conn:
            if marker is not None:
                at = select(*(k for k, _ in keys)).where(*conditions, HISTORY.c.event_id == marker)
                values = (await conn.execute(at)).first()
                if values is None:
                    raise UnknownMarker(marker)
                conditions.append(after_row(keys, tuple(values)))
            query = select(HISTORY).where(*conditions).order_by(*ordering(keys))
            if limit is not None:
                query = query.limit(limit)
            result = await conn.execute(query)
            return [_history_api(row) for row in result.mappings()]

    async def record_transitions(self, transitions: Sequence[Transition]) -> None:
        """Persist many state changes and their history rows in one transaction.

        This sits on the notification path (a storm's ten thousand transitions): two
        statements for the whole group (`store.bulk`), not a round trip per alarm.
        """
        if not transitions:
            return
        # By alarm, the last change winning: one statement updates a row once.
        states: dict[str, dict[str, Any]] = {}
        rows = []
        ids = iter(new_ids(len(transitions)))  # a storm's thousands from one read
        for t in transitions:
            states[t.alarm_id] = {
                "alarm_id": t.alarm_id,
                "state": t.current,
                "state_reason": t.reason,
                "state_timestamp": t.timestamp,
            }
            rows.append(
                {
                    "event_id": next(ids),
                    "alarm_id": t.alarm_id,
                    "type": STATE_TRANSITION,
                    "detail": orjson.dumps(
                        {"state": t.current, "transition_reason": t.reason}
                    ).decode(),
                    "timestamp": t.timestamp,
                    "project_id": t.project_id,
                    "user_id": t.user_id,
                    "on_behalf_of": t.on_behalf_of or t.project_id,
                    "severity": t.severity,
                    "writer": self.writer,
                }
            )
        async with self.db.engine.begin() as conn:
            await update_rows(conn, ALARMS, "alarm_id", list(states.values()))
            await insert_rows(conn, HISTORY, rows, None)


async def _add_history(conn: AsyncConnection, history: Sequence[HistoryEntry], writer: str) -> None:
    if history:
        await conn.execute(insert(HISTORY), [_history_row(entry, writer) for entry in history])
