from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opendoctor.store.db import Database
from opendoctor.store.haas import HaasStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[HaasStore]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/opendoctor.db")
    await db.migrate()
    yield HaasStore(db)
    await db.close()
