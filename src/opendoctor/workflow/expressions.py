"""Expressions in workflow definitions: YAQL (``<% %>``) and sandboxed Jinja2 (``{{ }}``).

A string that is exactly one expression evaluates to the expression's value (a list
stays a list); a string mixing text and expressions is rendered into a string, where a
value that is not a string is written as JSON (``[1, 2]``, ``{"a": 1}``, ``null``,
``true``). Compiled expressions are cached by their text.

Evaluation is bounded: YAQL by its ``limitIterators`` and ``memoryQuota`` options and
both languages by a budget of steps per evaluation, so an expression written into a
workflow cannot loop or allocate without end.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from jinja2 import TemplateError
from jinja2.exceptions import SecurityError

from opendoctor.workflow.expression_runtime import (
    BUDGET,
    JINJA,
    MAX_ITEMS,
    MAX_OUTPUT,
    MAX_STEPS,
    BudgetExceeded,
    CollectionTooLarge,
    YaqlError,
    as_text,
    jinja_vars,
    parse_yaql,
    plain,
    run_yaql,
)

__all__ = [
    "ExpressionError",
    "Scope",
    "check",
    "compile_cache_size",
    "evaluate",
    "has_expression",
]

MAX_JINJA_TEXT: Final = 64 * 1024

_YAQL_RE: Final = re.compile(r"<%(.*?)%>", re.S)
_JINJA_RE: Final = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.S)


class ExpressionError(ValueError):
    """An expression that does not compile or whose evaluation failed."""


def _no_task(name: str | None) -> dict[str, Any] | None:
    return None


def _no_execution() -> dict[str, Any]:
    return {}


@dataclass(slots=True)
class Scope:
    """What an expression sees: ``$`` (YAQL) or ``_`` (Jinja), and the engine's lookups."""

    data: Any
    task: Callable[[str | None], dict[str, Any] | None] = _no_task
    execution: Callable[[], dict[str, Any]] = _no_execution
    env: Mapping[str, Any] = field(default_factory=dict)


# -- compiled forms --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One string's compiled form: ``kind`` says how ``code`` runs."""

    text: str
    kind: str  # "yaql", "yaql-text", "jinja", "jinja-text"
    code: Any  # a yaql statement, a tuple of text and statements, or a jinja object

    def run(self, scope: Scope) -> Any:
        if self.kind == "yaql":
            return plain(run_yaql(self.code, scope))
        if self.kind == "yaql-text":
            return "".join(
                part if isinstance(part, str) else as_text(plain(run_yaql(part, scope)))
                for part in self.code
            )
        if self.kind == "jinja":
            value = self.code(**jinja_vars(scope))
            return plain(value)
        out: list[str] = []
        size = 0
        for chunk in self.code.generate(**jinja_vars(scope)):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise SecurityError(f"the rendered text exceeds {MAX_OUTPUT} characters")
            out.append(chunk)
        return "".join(out)


def _parse_yaql(source: str, text: str) -> Any:
    try:
        return parse_yaql(source)
    except YaqlError as exc:
        raise ExpressionError(f"{text!r}: YAQL syntax error: {exc}") from exc


def _has_yaql(text: str) -> bool:
    return "<%" in text and _YAQL_RE.search(text) is not None


def _has_jinja(text: str) -> bool:
    return ("{{" in text or "{%" in text) and _JINJA_RE.search(text) is not None


@lru_cache(maxsize=8192)
def _compile(text: str) -> _Compiled:
    yaql_found, jinja_found = _has_yaql(text), _has_jinja(text)
    if yaql_found and jinja_found:
        raise ExpressionError(f"{text!r}: mixes YAQL (<% %>) and Jinja ({{{{ }}}}) in one value")
    stripped = text.strip()
    if yaql_found:
        matches = list(_YAQL_RE.finditer(stripped))
        if len(matches) == 1 and matches[0].span() == (0, len(stripped)):
            return _Compiled(text, "yaql", _parse_yaql(matches[0].group(1), text))
        parts: list[Any] = []
        position = 0
        for match in _YAQL_RE.finditer(text):
            if match.start() > position:
                parts.append(text[position : match.start()])
            parts.append(_parse_yaql(match.group(1), text))
            position = match.end()
        if position < len(text):
            parts.append(text[position:])
        return _Compiled(text, "yaql-text", tuple(parts))
    if len(text) > MAX_JINJA_TEXT:
        raise ExpressionError(f"{text[:60]!r}...: a Jinja template over {MAX_JINJA_TEXT} bytes")
    try:
        inner = stripped[2:-2]
        if (
            stripped.startswith("{{")
            and stripped.endswith("}}")
            and "{{" not in inner
            and "{%" not in inner
        ):
            return _Compiled(
                text, "jinja", JINJA.compile_expression(inner, undefined_to_none=False)
            )
        return _Compiled(text, "jinja-text", JINJA.from_string(text))
    except TemplateError as exc:
        raise ExpressionError(f"{text!r}: Jinja syntax error: {exc}") from exc


def compile_cache_size() -> int:
    """How many distinct expression strings are compiled and cached."""
    return _compile.cache_info().currsize


# -- the public functions --------------------------------------------------------------


def _is_expression_text(text: str) -> bool:
    return _has_yaql(text) or _has_jinja(text)


def has_expression(value: Any) -> bool:
    """Whether ``value`` (a string, or a dict or list holding some) has an expression."""
    if isinstance(value, str):
        return _is_expression_text(value)
    if isinstance(value, Mapping):
        return any(has_expression(k) or has_expression(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_expression(v) for v in value)
    return False


def check(value: Any) -> None:
    """Compile every expression in ``value``; raise ExpressionError on the first bad one."""
    if isinstance(value, str):
        if _is_expression_text(value):
            _compile(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check(key)
            check(item)
    elif isinstance(value, list | tuple):
        for item in value:
            check(item)


def _evaluate_text(text: str, scope: Scope) -> Any:
    compiled = _compile(text)
    token = BUDGET.set([MAX_STEPS])
    try:
        return compiled.run(scope)
    except ExpressionError:
        raise
    except BudgetExceeded:
        raise ExpressionError(
            f"{text!r}: the evaluation exceeded its budget of {MAX_STEPS} steps"
        ) from None
    except KeyError as exc:
        raise ExpressionError(f"{text!r}: no key {exc.args[0]!r}") from exc
    except CollectionTooLarge as exc:
        raise ExpressionError(f"{text!r}: {exc} (the limit is {MAX_ITEMS})") from exc
    except Exception as exc:  # every failure inside an expression is the expression's
        raise ExpressionError(f"{text!r}: {exc or type(exc).__name__}") from exc
    finally:
        BUDGET.reset(token)


def evaluate(value: Any, scope: Scope) -> Any:
    """``value`` with every expression in it evaluated; dicts and lists are walked, keys
    included, and anything else is returned as it is."""
    if isinstance(value, str):
        if ("<%" in value or "{{" in value or "{%" in value) and _is_expression_text(value):
            return _evaluate_text(value, scope)
        return value
    if isinstance(value, Mapping):
        result: dict[Any, Any] = {}
        for key, item in value.items():
            new_key = evaluate(key, scope)
            new_item = evaluate(item, scope)
            if not isinstance(new_key, str | int | float | bool) and new_key is not None:
                raise ExpressionError(f"{key!r}: a key must be a string, not {new_key!r}")
            result[new_key] = new_item
        return result
    if isinstance(value, list | tuple):
        return [evaluate(item, scope) for item in value]
    return value
