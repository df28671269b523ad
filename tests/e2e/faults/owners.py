"""What the owners were told, counted from the consumers' raw arrival logs.

The fault tests assert on every callback that reached a consumer (`GET /arrivals` of the
sample consumer), repeats included: a deduplicated view would hide a second delivery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from opendoctor.tools.stack import Stack


def instance_of(arrival: dict[str, Any]) -> str:
    """The server a callback is about (its `instance_id` trait)."""
    traits = arrival["body"]["reason_data"]["event"]["traits"]
    return str({t[0]: t[2] for t in traits}["instance_id"])


async def arrivals(s: Stack) -> dict[str, list[dict[str, Any]]]:
    """Every callback each project's consumer received, in arrival order."""
    out = {}
    for project, consumer in s.consumers.items():
        out[project] = (await s.http.get(consumer.ready + "/arrivals")).json()
    return out


def counts(got: dict[str, list[dict[str, Any]]]) -> Counter[tuple[str, str]]:
    """(project, server) -> how many callbacks about that server reached that project."""
    return Counter((project, instance_of(a)) for project, items in got.items() for a in items)


def assert_told_once(
    got: dict[str, list[dict[str, Any]]], expected: Iterable[tuple[str, str]]
) -> None:
    """Exactly the expected (project, server) pairs were told, each exactly once."""
    seen = counts(got)
    want = Counter(expected)
    missing = sorted(set(want) - set(seen))
    extra = sorted(set(seen) - set(want))
    repeated = sorted((k, n) for k, n in seen.items() if n > 1)
    assert not (missing or extra or repeated), (
        f"missing {missing}; not expected {extra}; told more than once {repeated}"
    )
