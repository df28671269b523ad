"""Workflow executions, task executions and action executions in the store.

The engine keeps its runs in memory and writes them here in group commits (`RunWrites`):
whole records, upserted by id, so that a record written twice is simply its newer self
and a run is resumed after a restart from these rows alone. Which engine runs an
execution is its `owner`, taken over with a compare-and-set (`claim`).

Results: a task's `result` and an action's `output` may be any JSON value, so they are
stored wrapped, as a list of one: SQLite gives a column declared JSON numeric affinity and
would turn a bare `0` or `1e5` into a number that no longer reads back as JSON. A None read
back is JSON null; Python has one value for both, and the state of the record tells "no
result yet" from "a null result".

PostgreSQL cannot keep the NUL character in text columns (its json columns can: they
hold the escaped text). What an action returns is not ours to refuse, so on PostgreSQL
`write` puts U+FFFD in place of NUL in the text columns (a state_info quoting an error,
say); results, outputs and contexts, in json columns, keep it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from sqlalchemy import JSON, ColumnElement, Select, String, Table, Text, delete, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute

from opendoctor.core.workflows import ActionExecution, Execution, TaskExecution
from opendoctor.store.db import Database, dialect_insert
from opendoctor.store.paging import after_marker
from opendoctor.store.sqlite_writer import SqliteWriter
from opendoctor.store.tables import (
    ActionExecutionRow,
    TaskExecutionRow,
    WorkflowExecutionRow,
    WorkflowRequestRow,
)

EXECUTIONS = cast(Table, WorkflowExecutionRow.__table__)
TASKS = cast(Table, TaskExecutionRow.__table__)
ACTIONS = cast(Table, ActionExecutionRow.__table__)
REQUESTS = cast(Table, WorkflowRequestRow.__table__)
UNFINISHED: tuple[str, ...] = ("IDLE", "RUNNING", "PAUSED")
_REPLACEMENT = "\ufffd"
# Ids per statement when reading many runs: well under SQLite's limit of bound values.
_CHUNK = 500
Run = tuple[Execution, list[TaskExecution], list[ActionExecution]]


@dataclass(slots=True)
class RunWrites:
    """One group commit of the engine: whole records, inserted or replaced by id."""

    executions: list[Execution] = field(default_factory=list)
    tasks: list[TaskExecution] = field(default_factory=list)
    actions: list[ActionExecution] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.executions or self.tasks or self.actions)


class _Shape:
    """How the records of one table become rows: the columns (named as the record's
    fields), those holding text, those holding any JSON value (stored wrapped), and the
    upsert that replaces a whole row by id."""

    def __init__(self, db: Database, table: Table, wrapped: tuple[str, ...] = ()) -> None:
        self.columns = tuple(c.name for c in table.c)
        self.wrapped = wrapped
        self.texts = tuple(c.name for c in table.c if isinstance(c.type, String | Text))
        insert = dialect_insert(db, table)
        every = {name: insert.excluded[name] for name in self.columns if name != "id"}
        self.upsert = insert.on_conflict_do_update(index_elements=["id"], set_=every)
        self.no_nul = db.engine.dialect.name == "postgresql"
        # The same upsert as SQLite's own SQL, for `SqliteWriter`: rows as tuples, JSON
        # encoded here as the engine's JSON type would (store/db.py).
        self.json = tuple(i for i, c in enumerate(table.c) if isinstance(c.type, JSON))
        names = ", ".join(f'"{n}"' for n in self.columns)
        marks = ", ".join("?" for _ in self.columns)
        sets = ", ".join(f'"{n}" = excluded."{n}"' for n in self.columns if n != "id")
        self.sqlite = (
            f'INSERT INTO "{table.name}" ({names}) VALUES ({marks}) '
            f'ON CONFLICT ("id") DO UPDATE SET {sets}'
        )

    def tuples(self, records: Iterable[Any]) -> list[tuple[Any, ...]]:
        """`rows` as the SQLite driver takes them."""
        out = []
        for row in self.rows(records):
            values = list(row.values())
            for i in self.json:
                values[i] = orjson.dumps(values[i]).decode()
            out.append(tuple(values))
        return out

    def rows(self, records: Iterable[Any]) -> list[dict[str, Any]]:
        # The last record of an id wins, as it would across two commits; PostgreSQL would
        # refuse one statement that touches a row twice.
        unique = {r.id: r for r in records}
        columns = self.columns
        rows = [{name: getattr(r, name) for name in columns} for r in unique.values()]
        for name in self.wrapped:
            for row in rows:
                row[name] = [row[name]]
        if self.no_nul:
            for row in rows:
                for name in self.texts:
                    value = row[name]
                    if value and "\x00" in value:
                        row[name] = value.replace("\x00", _REPLACEMENT)
        return rows


class RunStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        path = db.sqlite_file
        self._writer = SqliteWriter(path) if path else None
        self._shapes = [
            _Shape(db, EXECUTIONS),
            _Shape(db, TASKS, wrapped=("result",)),
            _Shape(db, ACTIONS, wrapped=("output",)),
        ]

    # --- the engine ------------------------------------------------------------------------

    async def write(self, writes: RunWrites) -> None:
        """Upsert every record of `writes`, whole, in one transaction (one executemany per
        table). Timestamps are stored as the records give them."""
        if not writes:
            return
        groups: tuple[list[Any], ...] = (writes.executions, writes.tasks, writes.actions)
        if self._writer is not None:
            shaped = zip(self._shapes, groups, strict=True)
            await self._writer.write([(s.sqlite, s.tuples(r)) for s, r in shaped if r])
            return
        async with self.db.engine.begin() as conn:
            for shape, records in zip(self._shapes, groups, strict=True):
                if records:
                    await conn.execute(shape.upsert, shape.rows(records))

    async def close_writer(self) -> None:
        """Close the engine's writer (its connection and thread), if it has one."""
        if self._writer is not None:
            await self._writer.close()
            self._writer = None

    async def run(self, execution_id: str) -> Run | None:
        """An execution with its task and action executions (oldest first): all the
        engine needs to resume it. Its sub-executions are executions of their own."""
        return (await self.runs([execution_id])).get(execution_id)

    async def runs(self, execution_ids: Collection[str]) -> dict[str, Run]:
        """`run` for many executions at once (those not found are left out): an engine
        taking over hundreds reads them in a few statements, not four each."""
        ids = list(dict.fromkeys(execution_ids))
        found: dict[str, Run] = {}
        async with self.db.engine.connect() as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                await _read_runs(conn, chunk, found)
        return found

    async def unfinished(
        self, owners: Collection[str] | None, limit: int = 1000
    ) -> list[Execution]:
        """Executions not finished (IDLE, RUNNING, PAUSED), oldest first, that nobody owns
        or one of `owners` does (`owners` None: whoever owns them)."""
        query = select(EXECUTIONS).where(EXECUTIONS.c.state.in_(UNFINISHED))
        if owners is not None:
            query = query.where(
                or_(EXECUTIONS.c.owner.is_(None), EXECUTIONS.c.owner.in_(list(owners)))
            )
        query = query.order_by(EXECUTIONS.c.created_at, EXECUTIONS.c.id).limit(limit)
        async with self.db.engine.connect() as conn:
            return [Execution(**r) for r in (await conn.execute(query)).mappings()]

    async def claim(self, execution_id: str, owner: str, expected: str | None) -> bool:
        """Make `owner` the execution's owner if its owner is still `expected` (None:
        nobody); True if this call did it. One statement, so of two engines taking the
        same execution over, one wins."""
        current = EXECUTIONS.c.owner
        # `IS NOT DISTINCT FROM` spelled so that both engines use the index on it.
        same = current.is_(None) if expected is None else current == expected
        stmt = update(EXECUTIONS).where(EXECUTIONS.c.id == execution_id, same).values(owner=owner)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    async def claim_many(
        self, execution_ids: Collection[str], owner: str, expected: str | None
    ) -> list[str]:
        """`claim` for several executions of one old owner, in one statement; the ids
        this call claimed."""
        if not execution_ids:
            return []
        current = EXECUTIONS.c.owner
        same = current.is_(None) if expected is None else current == expected
        stmt = (
            update(EXECUTIONS)
            .where(EXECUTIONS.c.id.in_(list(execution_ids)), same)
            .values(owner=owner)
            .returning(EXECUTIONS.c.id)
        )
        async with self.db.engine.begin() as conn:
            return list((await conn.scalars(stmt)).all())

    async def owned(self, owner: str) -> list[str]:
        """The ids of the unfinished executions `owner` holds."""
        query = select(EXECUTIONS.c.id).where(
            EXECUTIONS.c.owner == owner, EXECUTIONS.c.state.in_(UNFINISHED)
        )
        async with self.db.engine.connect() as conn:
            return list((await conn.scalars(query)).all())

    # --- reads of runs (the API) -----------------------------------------------------------

    async def execution(self, id: str) -> Execution | None:
        async with self.db.engine.connect() as conn:
            query = select(EXECUTIONS).where(EXECUTIONS.c.id == id)
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else Execution(**row)

    async def executions(
        self,
        project_id: str | None,
        limit: int,
        marker: str | None = None,
        state: str | None = None,
        workflow_name: str | None = None,
        task_execution_id: str | None = None,
        root_execution_id: str | None = None,
        descending: bool = False,
    ) -> list[Execution]:
        """The project's executions (None: all), by creation time (newest first if
        `descending`), after `marker` (`UnknownMarker`)."""
        c = EXECUTIONS.c
        where = _equal(
            (c.project_id, project_id),
            (c.state, state),
            (c.workflow_name, workflow_name),
            (c.task_execution_id, task_execution_id),
            (c.root_execution_id, root_execution_id),
        )
        row_class = WorkflowExecutionRow
        rows = await self._page(
            EXECUTIONS, row_class.id, row_class.created_at, where, limit, marker, descending
        )
        return [Execution(**r) for r in rows]

    async def executions_by_ids(self, ids: Collection[str]) -> dict[str, Execution]:
        """The executions of `ids` by id (those not found are left out): a page of tasks
        finds the executions it shows in a statement or two, not one each."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, Execution] = {}
        if not wanted:
            return found
        async with self.db.engine.connect() as conn:
            for start in range(0, len(wanted), _CHUNK):
                query = select(EXECUTIONS).where(
                    EXECUTIONS.c.id.in_(wanted[start : start + _CHUNK])
                )
                for row in (await conn.execute(query)).mappings():
                    found[row["id"]] = Execution(**row)
        return found

    async def task(self, id: str) -> TaskExecution | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(TASKS).where(TASKS.c.id == id))).mappings().first()
        return None if row is None else _task(row)

    async def tasks(
        self,
        project_id: str | None,
        limit: int,
        marker: str | None = None,
        execution_id: str | None = None,
        state: str | None = None,
        name: str | None = None,
        descending: bool = False,
    ) -> list[TaskExecution]:
        """The project's task executions (None: all), by creation time (newest first if
        `descending`), after `marker` (`UnknownMarker`)."""
        c = TASKS.c
        where = _equal(
            (c.project_id, project_id),
            (c.execution_id, execution_id),
            (c.state, state),
            (c.name, name),
        )
        row_class = TaskExecutionRow
        rows = await self._page(
            TASKS, row_class.id, row_class.created_at, where, limit, marker, descending
        )
        return [_task(r) for r in rows]

    async def action_execution(self, id: str) -> ActionExecution | None:
        async with self.db.engine.connect() as conn:
            query = select(ACTIONS).where(ACTIONS.c.id == id)
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _action(row)

    async def action_executions(
        self,
        project_id: str | None,
        limit: int,
        marker: str | None = None,
        task_execution_id: str | None = None,
        execution_id: str | None = None,
        state: str | None = None,
        descending: bool = False,
    ) -> list[ActionExecution]:
        """The project's action executions (None: all), by creation time (newest first if
        `descending`), after `marker` (`UnknownMarker`)."""
        c = ACTIONS.c
        where = _equal(
            (c.project_id, project_id),
            (c.task_execution_id, task_execution_id),
            (c.execution_id, execution_id),
            (c.state, state),
        )
        row_class = ActionExecutionRow
        rows = await self._page(
            ACTIONS, row_class.id, row_class.created_at, where, limit, marker, descending
        )
        return [_action(r) for r in rows]

    async def delete_execution(self, id: str) -> bool:
        """Delete an execution, its task and action executions, and its sub-executions
        with theirs, all the way down, in one transaction; False if it was not there."""
        async with self.db.engine.begin() as conn:
            found = await conn.scalar(select(EXECUTIONS.c.id).where(EXECUTIONS.c.id == id))
            if found is None:
                return False
            doomed: set[str] = {id}
            frontier = [id]
            while frontier:
                tasks = select(TASKS.c.id).where(TASKS.c.execution_id.in_(frontier))
                children = select(EXECUTIONS.c.id).where(EXECUTIONS.c.task_execution_id.in_(tasks))
                # A (corrupt) cycle of sub-executions must not loop forever.
                frontier = [i for i in (await conn.scalars(children)).all() if i not in doomed]
                doomed.update(frontier)
            ids = sorted(doomed)
            tasks = select(TASKS.c.id).where(TASKS.c.execution_id.in_(ids))
            # Two statements: an OR across the subquery would scan the table (PostgreSQL).
            await conn.execute(delete(ACTIONS).where(ACTIONS.c.execution_id.in_(ids)))
            await conn.execute(delete(ACTIONS).where(ACTIONS.c.task_execution_id.in_(tasks)))
            await conn.execute(delete(TASKS).where(TASKS.c.execution_id.in_(ids)))
            await conn.execute(delete(EXECUTIONS).where(EXECUTIONS.c.id.in_(ids)))
            await conn.execute(delete(REQUESTS).where(REQUESTS.c.execution_id.in_(ids)))
        return True

    async def _page(
        self,
        table: Table,
        id_column: InstrumentedAttribute[str],
        key: InstrumentedAttribute[Any],
        where: list[ColumnElement[bool]],
        limit: int,
        marker: str | None,
        descending: bool = False,
    ) -> list[Any]:
        order = key.desc() if descending else key.asc()
        query: Select[Any] = select(table).where(*where).order_by(order, id_column).limit(limit)
        async with self.db.sessions() as session:
            query = await after_marker(session, query, id_column, key, marker, descending)
            return list((await session.execute(query)).mappings().all())


def _equal(*pairs: tuple[ColumnElement[Any], Any]) -> list[ColumnElement[bool]]:
    """column = value for each pair whose value is given (not None)."""
    return [column == value for column, value in pairs if value is not None]


def _unwrapped(value: Any) -> Any:
    return value[0] if value else None


def _task(row: RowMapping) -> TaskExecution:
    values = dict(row)
    values["result"] = _unwrapped(values["result"])
    return TaskExecution(**values)


def _action(row: RowMapping) -> ActionExecution:
    values = dict(row)
    values["output"] = _unwrapped(values["output"])
    return ActionExecution(**values)


async def _read_runs(conn: AsyncConnection, ids: list[str], into: dict[str, Run]) -> None:
    executions = await conn.execute(select(EXECUTIONS).where(EXECUTIONS.c.id.in_(ids)))
    runs: dict[str, Run] = {row["id"]: (Execution(**row), [], []) for row in executions.mappings()}
    if not runs:
        return
    into.update(runs)
    ids = list(runs)
    tasks = await conn.execute(
        select(TASKS).where(TASKS.c.execution_id.in_(ids)).order_by(TASKS.c.created_at, TASKS.c.id)
    )
    execution_of: dict[str, str] = {}
    for row in tasks.mappings():
        task = _task(row)
        execution_of[task.id] = task.execution_id
        runs[task.execution_id][1].append(task)
    # Two statements, not one with OR: PostgreSQL scans the whole table for an OR across
    # a subquery. The second finds the actions of a run's tasks that do not name the run.
    by_run = select(ACTIONS).where(ACTIONS.c.execution_id.in_(ids))
    by_task = (
        select(ACTIONS)
        .join(TASKS, TASKS.c.id == ACTIONS.c.task_execution_id)
        .where(
            TASKS.c.execution_id.in_(ids),
            or_(ACTIONS.c.execution_id.is_(None), ACTIONS.c.execution_id.not_in(ids)),
        )
    )
    actions = [_action(r) for q in (by_run, by_task) for r in (await conn.execute(q)).mappings()]
    actions.sort(key=lambda a: (a.created_at, a.id))
    for action in actions:
        # Its task says which run it is of, whatever its own execution_id says.
        owner = execution_of.get(action.task_execution_id or "") or action.execution_id
        if owner in runs:
            runs[owner][2].append(action)
