"""Workflow definitions in the store: an operator's own, public ones, and the shipped ones.

Who sees what (Mistral's rules, plus the shipped workflows): a project sees its own
definitions, every public one, and the built-in ones; an admin (no project) sees all.
For a name, the project's own wins over a public one, and both over a built-in one: an
operator replaces a shipped workflow by adding one of the same name, never by editing it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from sqlalchemy import ColumnElement, Table, and_, case, delete, exists, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from opendoctor.core.workflows import WorkflowDefinition
from opendoctor.store.db import Database, dialect_insert
from opendoctor.store.paging import after_marker
from opendoctor.store.tables import WorkflowDefinitionRow

P = ParamSpec("P")
T = TypeVar("T")

DEFINITIONS = cast(Table, WorkflowDefinitionRow.__table__)
_COLUMNS = tuple(c.name for c in DEFINITIONS.c)


class DefinitionExists(Exception):
    """A workflow of that name is in the namespace of that project already."""


def _definition(row: RowMapping) -> WorkflowDefinition:
    values = dict(row)
    values["builtin"] = bool(values["builtin"])
    values["tags"] = list(values["tags"] or [])
    return WorkflowDefinition(**values)


def _row(d: WorkflowDefinition) -> dict[str, Any]:
    return {name: getattr(d, name) for name in _COLUMNS}


def _visible(project_id: str) -> ColumnElement[bool]:
    t = DEFINITIONS.c
    return or_(t.project_id == project_id, t.scope == "public", t.builtin.is_(True))


def _shadowed(project_id: str) -> ColumnElement[bool]:
    """A built-in definition the project sees another of the same name in place of."""
    other = DEFINITIONS.alias("other")
    t = DEFINITIONS.c
    return and_(
        t.builtin.is_(True),
        exists().where(
            other.c.name == t.name,
            other.c.namespace == t.namespace,
            other.c.builtin.is_(False),
            or_(other.c.project_id == project_id, other.c.scope == "public"),
        ),
    )


def _changes(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Count a change to definitions as it begins and as it ends: a read made while it
    was under way (of the old or the new rows) is not taken for current afterwards."""

    @functools.wraps(method)
    async def counted(*args: P.args, **kwargs: P.kwargs) -> T:
        store = args[0]
        assert isinstance(store, DefinitionStore)
        store.generation += 1
        try:
            return await method(*args, **kwargs)
        finally:
            store.generation += 1

    return counted


class DefinitionStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Counts this process's changes to definitions (begun, whether or not they
        # commit): a cache of definitions drops what it read under an older count.
        self.generation = 0

    @_changes
    async def add_definitions(self, defs: list[WorkflowDefinition]) -> None:
        """Insert all of `defs` or none: `DefinitionExists` if a name is taken in its
        (namespace, project) by a definition other than a built-in one."""
        if not defs:
            return
        now = time.time()
        for d in defs:
            d.created_at = d.created_at or now
        t = DEFINITIONS.c
        taken = select(t.name, t.namespace).where(
            t.builtin.is_(False),
            or_(
                *(
                    and_(t.name == d.name, t.namespace == d.namespace, t.project_id == d.project_id)
                    for d in defs
                )
            ),
        )
        try:
            async with self.db.engine.begin() as conn:
                found = (await conn.execute(taken.limit(1))).first()
                if found is not None:
                    raise DefinitionExists(_exists(found.name, found.namespace))
                await conn.execute(DEFINITIONS.insert(), [_row(d) for d in defs])
        except IntegrityError:
            # Two of `defs` share a name, or another request added it meanwhile.
            raise DefinitionExists(
                "a workflow of one of these names exists already: "
                + ", ".join(sorted({d.name for d in defs}))
            ) from None

    @_changes
    async def replace_definitions(self, defs: list[WorkflowDefinition]) -> list[WorkflowDefinition]:
        """Replace the text (and what comes of it: scope, tags, input) of each definition
        found by (name, namespace, project_id), keeping its id and creation time; all or
        none, `LookupError` naming the first not found. A built-in one is not replaced
        (the operator adds one of the same name instead)."""
        now = time.time()
        t = DEFINITIONS.c
        out: list[WorkflowDefinition] = []
        async with self.db.engine.begin() as conn:
            for d in defs:
                where = and_(
                    t.name == d.name,
                    t.namespace == d.namespace,
                    t.project_id == d.project_id,
                    t.builtin.is_(False),
                )
                values = {
                    "definition": d.definition,
                    "scope": d.scope,
                    "tags": d.tags,
                    "input": d.input,
                    "updated_at": now,
                }
                result = await conn.execute(update(DEFINITIONS).where(where).values(values))
                if result.rowcount == 0:
                    raise LookupError(f"no workflow named {d.name!r}" + _in(d.namespace))
                row = (await conn.execute(select(DEFINITIONS).where(where))).mappings().one()
                out.append(_definition(row))
        return out

    @_changes
    async def put_builtin(self, defs: list[WorkflowDefinition]) -> None:
        """Insert or update the shipped definitions (public, of no project). One that did
        not change keeps its updated_at, so that a restart is not an edit."""
        if not defs:
            return
        now = time.time()
        rows = []
        for d in defs:
            d.builtin, d.scope, d.project_id = True, "public", ""
            d.created_at = d.created_at or now
            rows.append(_row(d))
        insert = dialect_insert(self.db, DEFINITIONS)
        excluded = insert.excluded
        stmt = insert.on_conflict_do_update(
            index_elements=["name", "namespace", "project_id", "builtin"],
            set_={
                "definition": excluded.definition,
                "input": excluded.input,
                "tags": excluded.tags,
                "scope": excluded.scope,
                "updated_at": now,
            },
            # PostgreSQL's json has no equality: the text alone tells a change.
            where=or_(
                DEFINITIONS.c.definition != excluded.definition,
                DEFINITIONS.c.input != excluded.input,
            ),
        )
        async with self.db.engine.begin() as conn:
            await conn.execute(stmt, rows)

    async def definition(
        self, ident: str, project_id: str | None, namespace: str = ""
    ) -> WorkflowDefinition | None:
        """The definition whose id is `ident`, else the one named `ident` that
        `project_id` sees (None: an admin, who sees all). By name: in `namespace`, else in
        the default namespace (as Mistral looks a sub-workflow up); then the project's
        own, else a public one, else a built-in one."""
        t = DEFINITIONS.c
        by_name = and_(t.name == ident, t.namespace.in_([namespace, ""]))
        query = select(DEFINITIONS).where(or_(t.id == ident, by_name))
        if project_id is None:
            owner_rank = case((t.builtin.is_(False), 0), else_=1)
        else:
            query = query.where(_visible(project_id))
            owner_rank = case(
                (and_(t.project_id == project_id, t.builtin.is_(False)), 0),
                (t.builtin.is_(False), 1),
                else_=2,
            )
        query = query.order_by(
            case((t.id == ident, 0), else_=1),
            case((t.namespace == namespace, 0), else_=1),
            owner_rank,
            t.created_at,
            t.id,
        ).limit(1)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _definition(row)

    async def definitions(
        self,
        project_id: str | None,
        limit: int,
        marker: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
    ) -> list[WorkflowDefinition]:
        """The definitions `project_id` sees (None: all), oldest first, after `marker`
        (`UnknownMarker`). A built-in one that the project's own or a public one of the
        same name shadows is left out, as `definition` would never return it."""
        t = DEFINITIONS.c
        query = select(DEFINITIONS).order_by(t.created_at, t.id).limit(limit)
        if project_id is not None:
            query = query.where(_visible(project_id), ~_shadowed(project_id))
        if name is not None:
            query = query.where(t.name == name)
        if namespace is not None:
            query = query.where(t.namespace == namespace)
        row_class = WorkflowDefinitionRow
        async with self.db.sessions() as session:
            query = await after_marker(
                session, query, row_class.id, row_class.created_at, marker, descending=False
            )
            rows = (await session.execute(query)).mappings().all()
        return [_definition(r) for r in rows]

    @_changes
    async def delete_definition(self, id: str) -> bool:
        """False if there is no such definition, or it is a built-in one (never deleted)."""
        where = and_(DEFINITIONS.c.id == id, DEFINITIONS.c.builtin.is_(False))
        async with self.db.engine.begin() as conn:
            result = await conn.execute(delete(DEFINITIONS).where(where))
        return bool(result.rowcount)


def _in(namespace: str) -> str:
    return f" in namespace {namespace!r}" if namespace else ""


def _exists(name: str, namespace: str) -> str:
    return f"a workflow named {name!r} exists" + _in(namespace)
