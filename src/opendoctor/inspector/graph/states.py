"""State normalization for the entity graph.

Every source speaks its own dialect (Nova says ``SHUTOFF``, a switch says ``down``, an
alarm says ``major``); the graph keeps the raw value for display and a normalized one that
the rest of the inspector can compare. Each normalized state has a priority so that a raw
state and a state deduced from elsewhere (e.g. "its host is down") can be merged by
keeping the worse of the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Category(StrEnum):
    RESOURCE = "RESOURCE"
    ALARM = "ALARM"


class ResourceState(StrEnum):
    OK = "OK"
    TRANSIENT = "TRANSIENT"
    SUBOPTIMAL = "SUBOPTIMAL"
    ERROR = "ERROR"
    DELETED = "DELETED"
    NA = "N/A"


class AlarmSeverity(StrEnum):
    CRITICAL = "CRITICAL"
    SEVERE = "SEVERE"
    WARNING = "WARNING"
    OK = "OK"
    NA = "N/A"


NA = "N/A"

# DELETED outranks ERROR: once a resource is gone, a deduced failure says nothing new.
RESOURCE_PRIORITY: dict[str, int] = {
    ResourceState.NA: 0,
    ResourceState.OK: 10,
    ResourceState.TRANSIENT: 20,
    ResourceState.SUBOPTIMAL: 30,
    ResourceState.ERROR: 40,
    ResourceState.DELETED: 50,
}

ALARM_PRIORITY: dict[str, int] = {
    AlarmSeverity.NA: 0,
    AlarmSeverity.OK: 10,
    AlarmSeverity.WARNING: 20,
    AlarmSeverity.SEVERE: 30,
    AlarmSeverity.CRITICAL: 40,
}

_R = ResourceState
_A = AlarmSeverity


def _table(groups: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    return {raw.lower(): state for state, raws in groups.items() for raw in raws}


# Used for any resource type without a table of its own, so that a custom type
# reporting a conventional word ("up", "error") still gets a meaningful state.
_DEFAULT_RESOURCE = _table(
    {
        _R.OK: ("ok", "up", "active", "available", "enabled", "running", "online"),
        _R.TRANSIENT: ("build", "building", "creating", "pending", "starting", "stopping"),
        _R.SUBOPTIMAL: ("degraded", "maintenance", "disabled"),
        _R.ERROR: ("error", "down", "failed", "offline", "unavailable"),
        _R.DELETED: ("deleted",),
    }
)

_RESOURCE_TABLES: dict[str, dict[str, str]] = {
    "host": _table(
        {
            _R.OK: ("up", "enabled", "available"),
            _R.SUBOPTIMAL: ("maintenance", "disabled"),
            _R.ERROR: ("down", "forced_down", "error"),
            _R.DELETED: ("deleted",),
        }
    ),
    "server": _table(
        {
            _R.OK: ("active",),
            _R.TRANSIENT: (
                "build",
                "rebuild",
                "migrating",
                "resize",
                "verify_resize",
                "revert_resize",
                "reboot",
                "hard_reboot",
                "password",
                "rescue",
            ),
            _R.SUBOPTIMAL: ("shutoff", "paused", "suspended", "shelved", "shelved_offloaded"),
            _R.ERROR: ("error",),
            _R.DELETED: ("deleted", "soft_deleted"),
        }
    ),
    "port": _table(
        {
            _R.OK: ("active", "up"),
            _R.TRANSIENT: ("build",),
            _R.ERROR: ("down", "error"),
            _R.DELETED: ("deleted",),
        }
    ),
    "network": _table(
        {
            _R.OK: ("active", "up"),
            _R.TRANSIENT: ("build",),
            _R.ERROR: ("down", "error"),
            _R.DELETED: ("deleted",),
        }
    ),
    "volume": _table(
        {
            _R.OK: ("available", "in-use"),
            _R.TRANSIENT: (
                "creating",
                "attaching",
                "detaching",
                "deleting",
                "extending",
                "backing-up",
                "restoring-backup",
                "downloading",
                "uploading",
                "retyping",
                "reserved",
                "maintenance",
            ),
            _R.ERROR: (
                "error",
                "error_deleting",
                "error_backing-up",
                "error_restoring",
                "error_extending",
                "error_managing",
            ),
            _R.DELETED: ("deleted",),
        }
    ),
    "zone": _table(
        {
            _R.OK: ("available", "up", "ok"),
            _R.ERROR: ("unavailable", "down", "error"),
            _R.DELETED: ("deleted",),
        }
    ),
    "switch": _table(
        {
            _R.OK: ("up", "active", "ok"),
            _R.SUBOPTIMAL: ("degraded", "maintenance"),
            _R.ERROR: ("down", "error", "unreachable"),
            _R.DELETED: ("deleted",),
        }
    ),
}

_DEFAULT_ALARM = _table(
    {
        _A.CRITICAL: ("critical", "disaster", "fatal"),
        _A.SEVERE: ("major", "severe", "moderate", "high", "error"),
        _A.WARNING: ("minor", "warning", "low", "average", "information"),
        _A.OK: ("ok", "cleared", "normal", "resolved"),
    }
)

_ALARM_TABLES: dict[str, dict[str, str]] = {}


def _tables(category: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    if category == Category.ALARM:
        return _ALARM_TABLES, _DEFAULT_ALARM
    if category == Category.RESOURCE:
        return _RESOURCE_TABLES, _DEFAULT_RESOURCE
    raise ValueError(f"unknown category {category!r}")


def _priorities(category: str) -> dict[str, int]:
    if category == Category.ALARM:
        return ALARM_PRIORITY
    if category == Category.RESOURCE:
        return RESOURCE_PRIORITY
    raise ValueError(f"unknown category {category!r}")


def register(category: str, type_: str, mapping: Mapping[str, str]) -> None:
    """Give a (custom) type its own raw → normalized table, replacing any previous one."""
    valid = _priorities(category)
    bad = sorted({state for state in mapping.values() if state not in valid})
    if bad:
        raise ValueError(f"not {category} states: {bad}")
    tables, _ = _tables(category)
    # Store the enum members themselves so every vertex shares one object per state.
    canonical = {str(s): s for s in valid}
    tables[type_] = {raw.lower(): canonical[state] for raw, state in mapping.items()}


def normalize(category: str, type_: str, raw: str | None) -> str:
    """The normalized state of `raw` for a vertex of this category and type (`N/A` if unknown)."""
    if raw is None:
        return NA
    tables, default = _tables(category)
    table = tables.get(type_, default)
    key = raw.strip().lower()
    state = table.get(key)
    if state is None and table is not default:
        # A per-type table lists the words that type uses; fall back to the common ones
        # rather than losing a plain "error" a driver happens to send.
        state = default.get(key)
    return NA if state is None else state


def priority(category: str, state: str | None) -> int:
    """Priority of a normalized state; unknown states rank with `N/A`."""
    if state is None:
        return 0
    return _priorities(category).get(state, 0)


def aggregate(category: str, raw_normalized: str, deduced: str | None) -> str:
    """The higher-priority of the normalized raw state and the deduced one (raw wins ties)."""
    if deduced is None:
        return raw_normalized
    if priority(category, deduced) > priority(category, raw_normalized):
        return deduced
    return raw_normalized
