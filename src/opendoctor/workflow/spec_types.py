"""The parsed form of a workflow definition: immutable records the engine reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "ENGINE_COMMANDS",
    "REQUIRED",
    "Retry",
    "SpecError",
    "TaskSpec",
    "Transition",
    "WorkflowSpec",
]

ENGINE_COMMANDS: Final = frozenset({"succeed", "fail", "pause"})


class _Required:
    """The default of a workflow input that the caller must give."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()


class SpecError(ValueError):
    """A definition that does not validate: where (line, path) and what is wrong."""

    def __init__(self, problem: str, line: int | None = None, path: str = "") -> None:
        self.problem = problem
        self.line = line
        self.path = path
        where = [f"line {line}"] if line is not None else []
        if path:
            where.append(path)
        super().__init__(": ".join([*where, problem]))


@dataclass(frozen=True, slots=True)
class Transition:
    """One entry of ``on-success``, ``on-error`` or ``on-complete``."""

    target: str
    guard: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Retry:
    count: Any
    delay: Any = 0
    break_on: str | None = None
    continue_on: str | None = None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    line: int
    action: str | None = None
    workflow: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    publish: dict[str, Any] = field(default_factory=dict)
    publish_on_error: dict[str, Any] = field(default_factory=dict)
    on_success: tuple[Transition, ...] = ()
    on_error: tuple[Transition, ...] = ()
    on_complete: tuple[Transition, ...] = ()
    join: int | str | None = None
    with_items: tuple[tuple[str, Any], ...] = ()
    concurrency: Any = None
    retry: Retry | None = None
    timeout: Any = None
    wait_before: Any = None
    wait_after: Any = None
    pause_before: Any = False
    keep_result: bool = True
    safe_rerun: bool = False
    requires: tuple[str, ...] = ()

    def transitions(self) -> tuple[Transition, ...]:
        return self.on_success + self.on_error + self.on_complete


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    line: int
    type: Literal["direct", "reverse"]
    input: tuple[tuple[str, Any], ...] = ()
    output: Any = None
    output_on_error: Any = None
    vars: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    description: str = ""
    tags: tuple[str, ...] = ()
    _inbound: dict[str, tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        inbound: dict[str, list[str]] = {name: [] for name in self.tasks}
        for name, task in self.tasks.items():
            sources = (
                task.requires
                if self.type == "reverse"
                else tuple(t.target for t in task.transitions())
            )
            for source in sources:
                edge_from, edge_to = (source, name) if self.type == "reverse" else (name, source)
                seen = inbound.get(edge_to)
                if seen is not None and edge_from not in seen:
                    seen.append(edge_from)
        # Frozen: the index is computed once here and kept beside the fields.
        object.__setattr__(
            self, "_inbound", {name: tuple(sources) for name, sources in inbound.items()}
        )

    def start_tasks(self) -> list[str]:
        """Direct: the tasks no transition names; reverse: the tasks requiring nothing."""
        return [name for name in self.tasks if not self._inbound.get(name)]

    def inbound(self, task: str) -> list[str]:
        """Direct: the tasks with a transition to ``task``; reverse: what it requires."""
        return list(self._inbound.get(task, ()))
