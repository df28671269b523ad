"""Group-committed writes on SQLite: each batch one transaction, on a thread of its own.

SQLite itself commits a workflow step in tens of microseconds (WAL, synchronous NORMAL);
through the async SQLAlchemy engine the same commit took two milliseconds, spent handing
each statement to aiosqlite's thread and back. A start waits for its commit before its
first action runs, so here the whole batch goes to one thread in one hand-over. The
workflow engine writes its runs through one, the event journal its events through
another (`event_journal`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

Rows = Sequence[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class OrElse:
    """`sql` over `rows`; if it changed fewer rows than it was given (some were not
    there to update), `otherwise()` runs too, in the same transaction. For an update
    that is almost always enough, beside the upsert whose rows cost more to build."""

    sql: str
    rows: Rows
    otherwise: Callable[[], tuple[str, Rows]]


Statement = tuple[str, Rows] | OrElse


class SqliteWriter:
    def __init__(self, path: str, name: str = "workflow-writer", setup: Sequence[str] = ()) -> None:
        self.path = path
        self._setup = setup  # run once the file is open (a schema of its own)
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # As the service's other connections (store/db.py): a process crash loses no
        # commit; other writers wait their turn rather than fail.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        for sql in self._setup:
            conn.execute(sql)
        return conn

    def _read(self, sql: str) -> list[tuple[Any, ...]]:
        if self._conn is None:
            self._conn = self._open()
        return self._conn.execute(sql).fetchall()

    async def read(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of a query, read on the writer's thread (between its writes)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._read, sql)

    def _write(self, statements: Sequence[Statement]) -> None:
        if self._conn is None:
            self._conn = self._open()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                if isinstance(statement, OrElse):
                    changed = conn.executemany(statement.sql, statement.rows).rowcount
                    if changed < len(statement.rows):
                        conn.executemany(*statement.otherwise())
                else:
                    conn.executemany(*statement)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def write(self, statements: Sequence[Statement]) -> None:
        """Run `statements` (SQL, rows) in one transaction; return once committed."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._write, statements)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)
