"""One rule for every test that needs a server (PostgreSQL, RabbitMQ, a tool on PATH).

On a developer's machine such a test is skipped when the server is not there; in CI it
fails, because a missing server must not turn into a green run that tested nothing. CI
is recognised the way CI systems announce themselves: `CI` set to `true`, `1` or `yes`
(any case). `.ci/run` sets `CI=true`.
"""

from __future__ import annotations

import os

import pytest

CI_VALUES = ("true", "1", "yes")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def need(problem: str) -> None:
    """Skip locally, fail in CI: a test that cannot reach what it needs must not pass there."""
    if in_ci():
        pytest.fail(
            f"{problem} (CI is set: a missing server is a failure, not a skip)", pytrace=False
        )
    pytest.skip(problem)
