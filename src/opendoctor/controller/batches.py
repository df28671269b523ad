"""A batch call made of single ones, for the VIMs whose API takes one server at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from opendoctor.core.ports import VimError


async def reset_each(
    reset: Callable[[str, str], Awaitable[None]], server_ids: Sequence[str], state: str
) -> dict[str, str]:
    """`VimDriver.reset_states` as one `reset_state` per server, all at once (the driver
    bounds how many run); why each refused one was refused, by id."""

    async def one(server_id: str) -> str | None:
        try:
            await reset(server_id, state)
        except VimError as exc:
            return str(exc)
        return None

    problems = await asyncio.gather(*(one(s) for s in server_ids))
    return {s: p for s, p in zip(server_ids, problems, strict=True) if p is not None}
