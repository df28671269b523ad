"""The migrations build the whole schema from nothing on every engine, and take it down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from opendoctor.store.db import MIGRATIONS, sync_url
from opendoctor.store.tables import Base
from tests import pg
from tests.conftest import ENGINES


@pytest.fixture(params=ENGINES)
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database nothing has touched: a new one even on PostgreSQL (not the session's)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/empty.db"
        return
    name = await pg.create_database()
    try:
        yield pg.url_for(name)
    finally:
        await pg.drop_database(name)


def _run(url: str, upgrade: bool, revision: str) -> dict[str, Any]:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    (command.upgrade if upgrade else command.downgrade)(cfg, revision)
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return {
                "tables": set(inspect(conn).get_table_names()),
                # What the tables in code and the migrated schema disagree on.
                "drift": compare_metadata(MigrationContext.configure(conn), Base.metadata),
            }
    finally:
        engine.dispose()


async def test_migrations_build_the_schema_from_nothing_and_take_it_down(empty_url: str) -> None:
    up = await asyncio.to_thread(_run, empty_url, True, "head")
    assert up["tables"] == set(Base.metadata.tables) | {"alembic_version"}
    assert up["drift"] == []

    down = await asyncio.to_thread(_run, empty_url, False, "base")
    assert down["tables"] == {"alembic_version"}

    again = await asyncio.to_thread(_run, empty_url, True, "head")
    assert again["tables"] == up["tables"] and again["drift"] == []
