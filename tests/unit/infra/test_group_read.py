"""Group read: concurrent callers' keys asked in one query; each gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from opendoctor.infra.group_read import GroupRead


async def test_callers_who_come_while_a_query_runs_share_the_next_one() -> None:
    asked: list[set[int]] = []
    gate = asyncio.Event()

    async def fetch(keys: set[int]) -> dict[int, str]:
        asked.append(set(keys))
        await gate.wait()
        return {k: f"v{k}" for k in keys if k % 2 == 0}

    reader: GroupRead[int, str] = GroupRead(fetch)
    first = asyncio.ensure_future(reader.read([1, 2]))
    await asyncio.sleep(0)  # its query is under way
    later = [asyncio.ensure_future(reader.read([k, k + 1])) for k in (3, 5, 7)]
    await asyncio.sleep(0)
    gate.set()
    answers = await asyncio.gather(first, *later)
    # Each caller gets the answer for its own keys only (what the query left out, too).
    assert answers == [{2: "v2"}, {4: "v4"}, {6: "v6"}, {8: "v8"}]
    assert asked == [{1, 2}, {3, 4, 5, 6, 7, 8}]
    assert reader.queries == 2
    assert await reader.read([]) == {}
    assert reader.queries == 2


async def test_a_failed_query_fails_its_callers_and_the_next_one_is_asked_afresh() -> None:
    calls = 0

    async def fetch(keys: set[str]) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the database went away")
        return dict.fromkeys(keys, 1)

    reader: GroupRead[str, int] = GroupRead(fetch)
    with pytest.raises(ConnectionError):
        await reader.read(["a"])
    assert await reader.read(["b"]) == {"b": 1}


async def test_a_query_holds_at_most_most_keys_unless_one_caller_asks_for_more() -> None:
    asked: list[int] = []
    gate = asyncio.Event()

    async def fetch(keys: set[int]) -> dict[int, int]:
        asked.append(len(keys))
        await gate.wait()
        return {}

    reader: GroupRead[int, int] = GroupRead(fetch, most=5)
    running = [asyncio.ensure_future(reader.read([0]))]
    await asyncio.sleep(0)
    running += [asyncio.ensure_future(reader.read(range(n * 10, n * 10 + 3))) for n in (1, 2)]
    running.append(asyncio.ensure_future(reader.read(range(100, 109))))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*running)
    assert asked == [1, 3, 3, 9]
