"""What a workflow task may call: actions, their inputs, their registry.

An action is a named coroutine of its input (a dict, as the task's `input:` or its
inline `action: std.echo output=1` gives it) and the context of the call. The engine
looks it up by name, checks its input (`ActionDef.input_problem`) when a workflow is
stored and again before each call, and treats `ActionError` as the task's failure:
its `result` is what `task().result` shows under `on-error`.

The built-in actions (`builtin_actions`) reach the platform only through a `Toolbox`,
so the app decides what they may touch (the VIM driver, the egress-policed HTTP client,
fencing, notifications) and tests hand in the in-memory pieces.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opendoctor.core.ports import VimDriver
from opendoctor.infra.httpclient import HttpClient

# Durable timers: the engine runs these itself, so that a restart resumes the time left.
TIMER_ACTIONS = frozenset({"std.wait", "std.sleep"})
# Actions on the infrastructure (any project's servers, hosts' power, alarms to any
# project): only an execution an admin or a rule template started may call them.
PRIVILEGED_PREFIXES = ("vim.", "nova.", "fence.")
PRIVILEGED_NAMES = frozenset({"notify"})


def privileged(name: str) -> bool:
    return name in PRIVILEGED_NAMES or name.startswith(PRIVILEGED_PREFIXES)


class ActionError(Exception):
    """The action failed; `result` is what the task sees as task().result under publish-on-error."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    required: bool = False
    default: Any = None


@dataclass(frozen=True, slots=True)
class ActionContext:
    execution_id: str | None
    task_execution_id: str | None
    action_execution_id: str
    project_id: str


ActionFn = Callable[[dict[str, Any], ActionContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ActionDef:
    name: str
    params: tuple[Param, ...]
    run: ActionFn
    description: str = ""
    # May run again after a crash interrupted it (reads, or effects the VIM makes idempotent).
    safe: bool = False
    # Safe for some inputs only (std.http: a GET is, a POST is not); consulted when
    # `safe` is False.
    safe_when: Callable[[Mapping[str, Any]], bool] | None = None

    def input_problem(self, given: Mapping[str, Any]) -> str | None:
        """What is wrong with the names of `given` ("missing input: url"), or None."""
        missing = [p.name for p in self.params if p.required and p.name not in given]
        if missing:
            return f"missing input: {', '.join(missing)}"
        known = {p.name for p in self.params}
        unexpected = sorted(k for k in given if k not in known)
        if unexpected:
            return f"unexpected input: {', '.join(unexpected)}"
        return None

    def is_safe(self, given: Mapping[str, Any]) -> bool:
        """Whether this call may run again after a crash interrupted it."""
        return self.safe or (self.safe_when is not None and self.safe_when(given))

    def signature(self) -> str:
        """The input as Mistral lists an action's: `url, method="GET"`."""
        return ", ".join(
            p.name if p.required else f"{p.name}={_shown(p.default)}" for p in self.params
        )


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    return str(value)


def define(
    name: str,
    params: Iterable[Param],
    fn: ActionFn,
    description: str = "",
    *,
    safe: bool = False,
    safe_when: Callable[[Mapping[str, Any]], bool] | None = None,
) -> ActionDef:
    """An action whose `run` checks its input and fills in the defaults before `fn`
    sees it, so that `fn` reads every parameter by name, whoever calls it."""
    params = tuple(params)

    async def run(given: dict[str, Any], ctx: ActionContext) -> Any:
        problem = d.input_problem(given)
        if problem is not None:
            raise ActionError(f"{name}: {problem}")
        full = {p.name: p.default for p in params if not p.required}
        full.update(given)
        return await fn(full, ctx)

    d = ActionDef(name, params, run, description, safe, safe_when)
    return d


class ActionRegistry:
    """Actions by name; a name is taken once."""

    def __init__(self, defs: Iterable[ActionDef] = ()) -> None:
        self._defs: dict[str, ActionDef] = {}
        for d in defs:
            self.add(d)

    def add(self, d: ActionDef) -> None:
        if d.name in self._defs:
            raise ValueError(f"an action named {d.name!r} is registered already")
        self._defs[d.name] = d

    def get(self, name: str) -> ActionDef | None:
        return self._defs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._defs

    def names(self) -> list[str]:
        return sorted(self._defs)

    def all(self) -> list[ActionDef]:
        return [self._defs[n] for n in self.names()]


@dataclass(slots=True)
class Toolbox:
    """What the built-in actions call: the platform pieces the app wires in."""

    vim: VimDriver
    # opendoctor.infra.httpclient: carries the egress policy. Give it one built as the
    # notifier's is (`egress=`, `max_response_bytes=`): std.http calls tenants' URLs.
    http: HttpClient | None = None
    # Power a host off, confirmed (the app wires recovery's fencing).
    fence: Callable[[str], Awaitable[None]] | None = None
    # Fire an event of this type with these traits to the alarms that match; returns
    # how many were told.
    notify: Callable[[str, dict[str, Any]], Awaitable[int]] | None = None


def builtin_actions(toolbox: Toolbox) -> ActionRegistry:
    """Every built-in action, bound to `toolbox`."""
    # Imported here: both modules build on the definitions above.
    from opendoctor.workflow.std_actions import std_actions
    from opendoctor.workflow.vim_actions import vim_actions

    return ActionRegistry([*std_actions(toolbox), *vim_actions(toolbox)])


# ----- reading inputs ---------------------------------------------------------------------


def string(given: Mapping[str, Any], name: str, action: str) -> str:
    """A non-empty string input, or `ActionError` saying what came instead."""
    value = given.get(name)
    if not isinstance(value, str) or not value:
        raise ActionError(f"{action}: {name} must be a non-empty string, got {value!r}")
    return value


def optional_string(given: Mapping[str, Any], name: str, action: str) -> str | None:
    return None if given.get(name) is None else string(given, name, action)


def boolean(given: Mapping[str, Any], name: str, action: str) -> bool:
    value = given.get(name)
    if not isinstance(value, bool):
        raise ActionError(f"{action}: {name} must be true or false, got {value!r}")
    return value


def mapping(given: Mapping[str, Any], name: str, action: str) -> dict[str, Any]:
    """A dict input; null counts as empty."""
    value = given.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ActionError(f"{action}: {name} must be a mapping, got {value!r}")
    return value


def number(given: Mapping[str, Any], name: str, action: str, *, at_most: float) -> float:
    """A finite number from 0 to `at_most` (a numeric string counts: expressions may
    give one)."""
    value = given.get(name)
    try:
        if isinstance(value, bool):
            raise TypeError
        found = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        found = math.nan
    if math.isnan(found):
        raise ActionError(f"{action}: {name} must be a number, got {value!r}")
    if found < 0:
        raise ActionError(f"{action}: {name} must not be negative, got {value!r}")
    if found > at_most:
        raise ActionError(f"{action}: {name} must be at most {at_most:g}, got {value!r}")
    return found
