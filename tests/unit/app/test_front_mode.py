"""Where a process serves HTTP (`api.front_loop`, app/front.py)."""

from __future__ import annotations

import pytest

from opendoctor.app.front import FrontMode, mode
from opendoctor.core.settings import Settings

ALL = frozenset({"api", "inspector", "notifier", "monitor"})
AMQP = {"bus": {"kind": "amqp"}, "database_url": "postgresql+asyncpg://x@127.0.0.1/x"}


@pytest.mark.parametrize(
    ("choice", "roles", "spooled", "expected"),
    [
        # Embedded: takes events in and delivers them, on SQLite and the in-process bus.
        ("auto", ALL, True, "process"),
        # The same roles on PostgreSQL or RabbitMQ: no spool, so a thread.
        ("auto", ALL, False, "thread"),
        # An api process alone, or one without the api: nothing to keep apart.
        ("auto", frozenset({"api"}), False, "off"),
        ("auto", frozenset({"inspector", "notifier"}), False, "off"),
        ("on", frozenset({"api"}), False, "thread"),
        ("off", ALL, True, "off"),
        ("process", ALL, True, "process"),
        ("process", ALL, False, "thread"),  # said in the log
    ],
)
def test_the_front_is_where_the_setting_and_the_process_say(
    choice: str, roles: frozenset[str], spooled: bool, expected: FrontMode
) -> None:
    extra = AMQP if roles != ALL else {}
    settings = Settings(api={"front_loop": choice}, roles=sorted(roles), **extra)
    assert mode(settings, roles, spooled) == expected
