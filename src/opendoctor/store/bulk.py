"""Many rows written in one statement: the shape of a storm's writes.

A storm writes thousands of outbox rows in a few seconds, in groups of tens to hundreds
(`infra.group_commit`). Through SQLAlchemy's ORM bulk insert each group became several
statements, one per run of rows alike in which columns were empty (a delivered entry
beside a pending one starts a new run): 511 INSERTs for 10,000 notifications, every
value passing through the ORM's and the dialect's per-row Python on the service's loop.

Here a group is one statement whatever its rows hold:
- PostgreSQL: one array per column, unnested (`INSERT ... SELECT FROM unnest($1, ...)`,
  `UPDATE ... FROM unnest(...)`). The statement's text does not depend on the number of
  rows, so asyncpg prepares it once per connection, and asyncpg encodes the arrays.
- SQLite: one executemany of the same Core statement; sqlite3 loops over the rows in C.

JSON columns take their value already encoded (a `str`): the notifier encodes a body
once, to send it, and the same text is stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Table, Text, bindparam, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from opendoctor.store.db import dialect_insert_for

Row = Mapping[str, Any]


def _pg_type(table: Table, column: str) -> str:
    """The array element type a column's values travel as (JSON as text, cast after)."""
    kind = table.c[column].type
    if isinstance(kind, Float):
        return "float8"
    if isinstance(kind, Integer):
        return "int8"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, (String, Text, JSON)):
        return "text"
    raise TypeError(f"{table.name}.{column}: no array type for {kind!r}")


def _pg_value(table: Table, column: str) -> str:
    """How the unnested value is written into the column."""
    return f"u.{column}::json" if isinstance(table.c[column].type, JSON) else f"u.{column}"


def _unnest(table: Table, columns: Sequence[str]) -> str:
    arrays = ", ".join(f"CAST(:{c} AS {_pg_type(table, c)}[])" for c in columns)
    return f"unnest({arrays}) AS u({', '.join(columns)})"


@cache
def _pg_insert_sql(
    table: Table, columns: tuple[str, ...], conflict: str | None, replace: tuple[str, ...]
) -> Any:
    values = ", ".join(_pg_value(table, c) for c in columns)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"SELECT {values} FROM {_unnest(table, columns)}"
    )
    if conflict is not None and replace:
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in replace)
        sql += f" ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
    elif conflict is not None:
        sql += f" ON CONFLICT ({conflict}) DO NOTHING"
    return text(sql)


@cache
def _pg_update_sql(table: Table, key: str, columns: tuple[str, ...]) -> Any:
    sets = ", ".join(f"{c} = {_pg_value(table, c)}" for c in columns if c != key)
    return text(
        f"UPDATE {table.name} SET {sets} FROM {_unnest(table, columns)} "
        f"WHERE {table.name}.{key} = u.{key}"
    )


def _arrays(columns: Sequence[str], rows: Sequence[Row]) -> dict[str, list[Any]]:
    return {c: [row[c] for row in rows] for c in columns}


def _json_as_text(table: Table, columns: Sequence[str]) -> dict[str, Any]:
    """Bind parameters that carry a JSON column's encoded text as it is."""
    return {c: bindparam(c, type_=Text) for c in columns if isinstance(table.c[c].type, JSON)}


async def insert_rows(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[Row],
    skip_conflicts_on: str | None,
    replace: Sequence[str] = (),
) -> None:
    """Insert `rows` (every row the same keys), in one statement; with
    `skip_conflicts_on` (a unique column), a row whose value is taken is left out, or with
    `replace`, the stored row takes these columns from it (an upsert; of rows given with
    the same value, the last)."""
    if not rows:
        return
    if skip_conflicts_on is not None and replace:
        # One statement may set a row only once (PostgreSQL refuses a second time).
        rows = list({row[skip_conflicts_on]: row for row in rows}.values())
    columns = tuple(rows[0])
    if conn.dialect.name == "postgresql":
        sql = _pg_insert_sql(table, columns, skip_conflicts_on, tuple(replace))
        await conn.execute(sql, _arrays(columns, rows))
        return
    stmt = dialect_insert_for(conn.dialect.name, table)
    if as_text := _json_as_text(table, columns):
        stmt = stmt.values(as_text)
    if skip_conflicts_on is not None and replace:
        stmt = stmt.on_conflict_do_update(
            index_elements=[skip_conflicts_on], set_={c: stmt.excluded[c] for c in replace}
        )
    elif skip_conflicts_on is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=[skip_conflicts_on])
    await conn.execute(stmt, list(rows))


async def update_rows(conn: AsyncConnection, table: Table, key: str, rows: Sequence[Row]) -> int:
    """Set the other columns of each row found by `key` (every row the same keys), in
    one statement; returns how many rows were found."""
    if not rows:
        return 0
    columns = tuple(rows[0])
    if conn.dialect.name == "postgresql":
        result = await conn.execute(_pg_update_sql(table, key, columns), _arrays(columns, rows))
        return int(result.rowcount)
    renamed = [{f"b_{c}": v for c, v in row.items()} for row in rows]
    stmt = (
        update(table)
        .where(table.c[key] == bindparam(f"b_{key}"))
        .values(
            {
                c: bindparam(f"b_{c}", type_=Text if isinstance(table.c[c].type, JSON) else None)
                for c in columns
                if c != key
            }
        )
    )
    return int((await conn.execute(stmt, renamed)).rowcount)
