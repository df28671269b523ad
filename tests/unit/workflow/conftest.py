"""The workflow tests' engine: on a new SQLite database each (`test_takeover` brings its
own, on PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.workflow.bed import Bed, bed_on


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    async with bed_on(f"sqlite+aiosqlite:///{tmp_path}/wf.db") as bed:
        yield bed
