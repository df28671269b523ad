"""What the adapters' bodies are made of, bounded: every string, every map of labels.

A tool's labels end up in the event's details, stored and shown: each has a bounded
length and count, and no NUL (PostgreSQL cannot store it in text).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import Field, StringConstraints, ValidationError

from opendoctor.core.errors import RequestError

NO_NUL = r"^[^\x00]*$"
MAX_LABELS = 64
MAX_NAME = 128

Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]
Text = Annotated[str, StringConstraints(max_length=2048, pattern=NO_NUL)]
Id = Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL)]
Labels = Annotated[dict[Name, Text], Field(max_length=MAX_LABELS)]


class Invalid(ValueError):
    """pydantic's errors about one part of a body; `prefix` is that part's place in it
    (`[2]`, say), or "" for the whole body."""

    def __init__(self, prefix: str, error: ValidationError) -> None:
        super().__init__(str(error))
        self.prefix = prefix
        self.error = error


def load(raw: bytes) -> Any:
    """The JSON of a body (its size and depth are bounded before it gets here)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc}", "body") from exc


def counted(items: object, limit: int, field: str, setting: str) -> list[Any]:
    """`items` as a list of at most `limit`; a 413 naming the setting otherwise."""
    if not isinstance(items, list):
        raise RequestError(400, "expected a list", field)
    if len(items) > limit:
        raise RequestError(413, f"{len(items)} at once, over {setting} ({limit})", field)
    return items


def fingerprint(fields: Mapping[str, str]) -> str:
    """A stable id for an alert the tool gives none: its fields, sorted."""
    raw = orjson.dumps(dict(sorted(fields.items())))
    return hashlib.sha256(raw).hexdigest()[:16]


def epoch(at: datetime | None, default: float) -> float:
    """Seconds since the epoch; a time without a zone is UTC; none (or Go's zero time,
    year 1) is `default`."""
    if at is None or at.year < 1970:
        return default
    stamp = at if at.tzinfo else at.replace(tzinfo=UTC)
    return stamp.timestamp()
