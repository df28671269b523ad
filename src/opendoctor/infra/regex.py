"""Regular expressions that callers write (topology queries, rule templates), matched by
RE2: time linear in the text whatever the pattern, so `(a+)+$` cannot hold up the event
loop the way a backtracking engine would. The price: no backreferences, no lookaround."""

from __future__ import annotations

from collections.abc import Callable

import re2  # type: ignore[import-untyped]

MAX_PATTERN = 1000  # characters: a pattern longer than this is not a filter anyone writes
MAX_MEMORY = 8 << 20  # bytes RE2 may use for one compiled pattern


class RegexError(ValueError):
    """A pattern that cannot be used; the message says why."""


def searcher(pattern: str, ignore_case: bool = False) -> Callable[[str], bool]:
    """Whether the pattern matches somewhere in a text (as `re.search` would)."""
    if len(pattern) > MAX_PATTERN:
        raise RegexError(f"the pattern is {len(pattern)} characters long, over {MAX_PATTERN}")
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.log_errors = False
    options.max_mem = MAX_MEMORY
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else exc
        reason = raw.decode() if isinstance(raw, bytes) else str(raw)
        if "escape sequence" in reason or "perl operator" in reason:
            reason += " (patterns run in linear time: no backreferences, no lookaround)"
        raise RegexError(reason) from None
    search = compiled.search
    return lambda text: search(text) is not None
