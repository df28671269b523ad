"""The expression languages' machinery: the YAQL engine and the Jinja sandbox, the
functions workflows call, the step budget, and plain values out.

``expressions`` is the public face; this module holds what it runs on.
"""

from __future__ import annotations

# yaql 3.2 reads ``collections.abc`` off the ``collections`` module without importing it.
import collections.abc  # noqa: F401
import contextvars
import datetime
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import yaql
from jinja2 import StrictUndefined, Undefined
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context as JinjaContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from yaql.language import exceptions as yaql_exceptions
from yaql.language import factory as yaql_factory
from yaql.language import specs, yaqltypes

if TYPE_CHECKING:
    from opendoctor.workflow.expressions import Scope

YaqlError = yaql_exceptions.YaqlException
CollectionTooLarge = yaql_exceptions.CollectionTooLargeException

MAX_STEPS: Final = 20_000
"""Function calls (YAQL) or attribute and item reads, calls, range items (Jinja) allowed
in one evaluation: each YAQL call costs tens of microseconds, so this is about a second."""
MAX_ITEMS: Final = 10_000
MAX_VALUE_BYTES: Final = 4 * 1024 * 1024
MAX_OUTPUT: Final = 1024 * 1024

# -- the step budget -------------------------------------------------------------------

BUDGET: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "opendoctor_workflow_expression_budget", default=None
)


class BudgetExceeded(Exception):
    pass


def charge(steps: int) -> None:
    budget = BUDGET.get()
    if budget is None:
        return
    budget[0] -= steps
    if budget[0] < 0:
        raise BudgetExceeded


class _MeteredOptions(dict[str, Any]):
    """yaql reads ``yaql.memoryQuota`` after every function call it makes: that read is
    the one per-step hook the library offers, so it is where the budget is charged."""

    def get(self, key: str, default: Any = None) -> Any:
        if key == "yaql.memoryQuota":
            charge(1)
        return super().get(key, default)


# -- values handed back ----------------------------------------------------------------


def plain(value: Any) -> Any:
    """A JSON-able copy of a value that YAQL or Jinja produced."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset | Iterator):
        return [plain(v) for v in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises here, naming the missing variable
    raise TypeError(f"a value of type {type(value).__name__} is not a JSON value")


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Undefined):
        return str(value)
    return json.dumps(plain(value), ensure_ascii=False)


# -- shared helper functions -----------------------------------------------------------


def _json_parse(text: str) -> Any:
    return json.loads(text)


def _json_dump(value: Any) -> str:
    return json.dumps(plain(value), ensure_ascii=False)


def _new_uuid() -> str:
    return str(uuid.uuid4())


# -- YAQL ------------------------------------------------------------------------------


def _scope_of(context: Any) -> Scope:
    scope: Scope = context["__scope"]
    return scope


def _yaql_task(context: Any, name: str | None = None) -> Any:
    return _scope_of(context).task(name)


def _yaql_execution(context: Any) -> Any:
    return _scope_of(context).execution()


def _yaql_env(context: Any) -> Any:
    return _scope_of(context).env


def _yaql_json_parse(text: str) -> Any:
    return _json_parse(text)


def _yaql_json_dump(value: Any) -> str:
    return _json_dump(value)


def _yaql_uuid() -> str:
    return _new_uuid()


def _repeat(sequence: Any, times: int) -> Any:
    if len(sequence) * times > MAX_ITEMS:
        raise yaql_exceptions.CollectionTooLargeException(MAX_ITEMS)
    return sequence * times


def _yaql_sequence_by_int(left: Any, right: int) -> Any:
    return _repeat(left, right)


def _yaql_int_by_sequence(left: int, right: Any) -> Any:
    return _repeat(right, left)


def _yaql_pow(a: Any, b: Any, c: Any = None) -> Any:
    if isinstance(a, int) and isinstance(b, int) and c is None and abs(b) > 1024:
        raise ValueError("pow(): the exponent is too large")
    return pow(a, b, c)


def _typed(function: Callable[..., Any], name: str, **types: Any) -> Any:
    """A yaql function definition: yaql's decorators, applied as calls so the typed
    function stays typed."""
    for parameter, kind in types.items():
        function = specs.parameter(parameter, kind)(function)
    return specs.name(name)(function)


# Replacing yaql's own: its size check lets a tuple be repeated without bound (it weighs
# the tuple against an empty list), and a huge integer power runs for minutes.
_YAQL_OVERRIDES: Final = (
    _typed(_yaql_sequence_by_int, "#operator_*", left=yaqltypes.Sequence(), right=int),
    _typed(_yaql_int_by_sequence, "#operator_*", left=int, right=yaqltypes.Sequence()),
    _typed(
        _yaql_pow,
        "pow",
        a=yaqltypes.Number(),
        b=yaqltypes.Number(),
        c=yaqltypes.Number(nullable=True),
    ),
)


def _make_yaql() -> tuple[Any, Any]:
    engine = yaql_factory.YaqlFactory().create(
        options={
            "yaql.limitIterators": MAX_ITEMS,
            "yaql.memoryQuota": MAX_VALUE_BYTES,
            "yaql.convertTuplesToLists": True,
            "yaql.convertSetsToLists": True,
        }
    )
    # No public setter exists: the metered mapping replaces the engine's frozen copy.
    engine._options = _MeteredOptions(engine.options)
    root = yaql.create_context()
    # Names given explicitly: yaql would otherwise camel-case them (``jsonParse``).
    for name, function in (
        ("task", _yaql_task),
        ("execution", _yaql_execution),
        ("env", _yaql_env),
        ("json_parse", _yaql_json_parse),
        ("json_dump", _yaql_json_dump),
        ("uuid", _yaql_uuid),
    ):
        root.register_function(function, name=name)
    for definition in _YAQL_OVERRIDES:
        root.register_function(definition)
    return engine, root


_YAQL_ENGINE, _YAQL_ROOT = _make_yaql()
# ply's parser keeps its state on the parser object: one parse at a time.
_YAQL_PARSE_LOCK = threading.Lock()


def parse_yaql(source: str) -> Any:
    """A parsed YAQL statement; raises yaql's YaqlException on a syntax error."""
    with _YAQL_PARSE_LOCK:
        return _YAQL_ENGINE(source)


def run_yaql(statement: Any, scope: Scope) -> Any:
    context = _YAQL_ROOT.create_child_context()
    context["__scope"] = scope
    return statement.evaluate(data=scope.data, context=context)


# -- Jinja -----------------------------------------------------------------------------


class _Jinja(ImmutableSandboxedEnvironment):
    """The sandbox, immutable so that an expression cannot change the workflow context,
    charging the step budget on every read and call and capping repetition and powers."""

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        value = super().getattr(obj, attribute)
        charge(1 + (len(value) if isinstance(value, list | dict | tuple) else 0))
        return value

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        charge(1 + (len(value) if isinstance(value, list | dict | tuple) else 0))
        return value

    def call(__self, __context: JinjaContext, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        charge(1)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: JinjaContext, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_VALUE_BYTES
                ):
                    raise SecurityError("the repeated value would be too large")
        elif (
            operator == "**"
            and isinstance(right, int | float)
            and isinstance(left, int | float)
            and abs(right) > 1024
        ):
            raise SecurityError("the exponent is too large")
        return super().call_binop(context, operator, left, right)


def _jinja_range(*args: int) -> range:
    items = range(*args)
    if len(items) > MAX_ITEMS:
        raise SecurityError(f"range() of more than {MAX_ITEMS} items")
    charge(len(items))
    return items


JINJA = _Jinja(undefined=StrictUndefined, autoescape=False, finalize=as_text)
JINJA.globals.update(
    range=_jinja_range, json_parse=_json_parse, json_dump=_json_dump, uuid=_new_uuid
)
JINJA.filters.update(json_parse=_json_parse, json_dump=_json_dump)


def jinja_vars(scope: Scope) -> dict[str, Any]:
    def task(name: str | None = None) -> dict[str, Any] | None:
        return scope.task(name)

    def env() -> Mapping[str, Any]:
        return scope.env

    return {"_": scope.data, "task": task, "execution": scope.execution, "env": env}
