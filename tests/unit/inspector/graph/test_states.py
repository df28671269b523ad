from __future__ import annotations

import pytest

from opendoctor.inspector.graph import states
from opendoctor.inspector.graph.states import AlarmSeverity, Category, ResourceState

R = Category.RESOURCE
A = Category.ALARM


@pytest.mark.parametrize(
    ("type_", "raw", "expected"),
    [
        ("host", "up", ResourceState.OK),
        ("host", "Enabled", ResourceState.OK),
        ("host", "DOWN", ResourceState.ERROR),
        ("host", "forced_down", ResourceState.ERROR),
        ("host", "maintenance", ResourceState.SUBOPTIMAL),
        ("server", "ACTIVE", ResourceState.OK),
        ("server", "build", ResourceState.TRANSIENT),
        ("server", "REBUILD", ResourceState.TRANSIENT),
        ("server", "MIGRATING", ResourceState.TRANSIENT),
        ("server", "RESIZE", ResourceState.TRANSIENT),
        ("server", "SHUTOFF", ResourceState.SUBOPTIMAL),
        ("server", "PAUSED", ResourceState.SUBOPTIMAL),
        ("server", "SUSPENDED", ResourceState.SUBOPTIMAL),
        ("server", "ERROR", ResourceState.ERROR),
        ("server", "DELETED", ResourceState.DELETED),
        ("server", " active ", ResourceState.OK),
        ("volume", "in-use", ResourceState.OK),
        ("switch", "down", ResourceState.ERROR),
        # A custom type falls back on the common vocabulary.
        ("gpu", "Up", ResourceState.OK),
        ("gpu", "failed", ResourceState.ERROR),
        ("server", "no-such-state", "N/A"),
        ("server", None, "N/A"),
    ],
)
def test_resource_normalization(type_: str, raw: str | None, expected: str) -> None:
    assert states.normalize(R, type_, raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("critical", AlarmSeverity.CRITICAL),
        ("MAJOR", AlarmSeverity.SEVERE),
        ("severe", AlarmSeverity.SEVERE),
        ("moderate", AlarmSeverity.SEVERE),
        ("minor", AlarmSeverity.WARNING),
        ("Warning", AlarmSeverity.WARNING),
        ("low", AlarmSeverity.WARNING),
        ("ok", AlarmSeverity.OK),
        ("CLEARED", AlarmSeverity.OK),
        ("bogus", "N/A"),
    ],
)
def test_alarm_normalization(raw: str, expected: str) -> None:
    assert states.normalize(A, "alarm", raw) == expected
    assert states.normalize(A, "zabbix", raw) == expected


def test_na_is_shared_by_both_categories() -> None:
    assert str(ResourceState.NA) == str(AlarmSeverity.NA) == states.NA == "N/A"


def test_priorities_are_ordered() -> None:
    order = ["N/A", "OK", "TRANSIENT", "SUBOPTIMAL", "ERROR", "DELETED"]
    assert [states.priority(R, s) for s in order] == sorted(states.priority(R, s) for s in order)
    assert len({states.priority(R, s) for s in order}) == len(order)
    alarm_order = ["N/A", "OK", "WARNING", "SEVERE", "CRITICAL"]
    prios = [states.priority(A, s) for s in alarm_order]
    assert prios == sorted(set(prios))
    assert states.priority(R, None) == states.priority(R, "weird") == 0


@pytest.mark.parametrize(
    ("category", "raw", "deduced", "expected"),
    [
        (R, "OK", None, "OK"),
        (R, "OK", "ERROR", "ERROR"),
        (R, "ERROR", "SUBOPTIMAL", "ERROR"),
        (R, "DELETED", "ERROR", "DELETED"),
        (R, "N/A", "TRANSIENT", "TRANSIENT"),
        (A, "WARNING", "CRITICAL", "CRITICAL"),
        (A, "SEVERE", "OK", "SEVERE"),
        (A, "OK", "OK", "OK"),
    ],
)
def test_aggregate(category: str, raw: str, deduced: str | None, expected: str) -> None:
    assert states.aggregate(category, raw, deduced) == expected


def test_register_custom_type() -> None:
    states.register(R, "test-pdu", {"Powered": "OK", "tripped": "ERROR"})
    assert states.normalize(R, "test-pdu", "POWERED") == "OK"
    assert states.normalize(R, "test-pdu", "Tripped") == "ERROR"
    with pytest.raises(ValueError, match="not RESOURCE states"):
        states.register(R, "test-pdu", {"x": "CRITICAL"})


def test_unknown_category_rejected() -> None:
    with pytest.raises(ValueError, match="unknown category"):
        states.normalize("THING", "host", "up")
