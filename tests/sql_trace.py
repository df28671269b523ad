"""What a test's code sent to the database: the statements, with their parameters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from opendoctor.store.db import Database


@contextmanager
def statements(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """Each statement sent meanwhile, with its parameters, in order."""
    seen: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", note)


def starting(seen: list[tuple[str, Any]], verb: str) -> list[str]:
    """The statements that begin with `verb` (INSERT, UPDATE, ...)."""
    return [s for s, _ in seen if s.lstrip().upper().startswith(verb)]
