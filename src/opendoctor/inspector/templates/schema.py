"""The YAML shape of a template, checked by pydantic before any meaning is given to it.

name: host_down
description: A host that is down takes its servers with it.
entities:
  host_alarm: {category: ALARM, state: CRITICAL}
  host: {type: host}
  server: {type: server}
scenarios:
  - condition: host_alarm [on] host AND host [contains] server
    actions:
      - raise_alarm: {target: server, name: instance.host_down, severity: CRITICAL,
                      causing_alarm: host_alarm}
      - notify: {target: server}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


# People write "critical" and "error"; the graph's states are upper case.
Upper = BeforeValidator(_upper)


class Regex(BaseModel):
    model_config = ConfigDict(extra="forbid")
    regex: str


MatchValue = str | list[str] | Regex


class EntityIn(BaseModel):
    """What a vertex must look like to stand for this entity; every given field must match."""

    model_config = ConfigDict(extra="forbid")
    category: Annotated[Literal["ALARM", "RESOURCE"] | None, Upper] = None
    type: MatchValue | None = None
    id: MatchValue | None = None
    name: MatchValue | None = None
    project: MatchValue | None = None
    state: MatchValue | None = None
    raw_state: MatchValue | None = None
    props: dict[str, MatchValue] | None = None


Entity = Annotated[str, Field(pattern=IDENT)]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RaiseAlarm(_Action):
    target: Entity
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    severity: Annotated[Literal["CRITICAL", "SEVERE", "WARNING"], Upper] = "CRITICAL"
    causing_alarm: Entity | None = None


class SetState(_Action):
    target: Entity
    state: Annotated[Literal["OK", "TRANSIENT", "SUBOPTIMAL", "ERROR"], Upper]


class MarkDown(_Action):
    target: Entity


class AddCausalRelationship(_Action):
    source: Entity
    target: Entity


class Notify(_Action):
    target: Entity
    event_type: str = Field("compute.instance.update", min_length=1)
    state: str = Field("error", min_length=1)
    cause: Entity | None = None


class RunWorkflow(_Action):
    workflow: str = Field(min_length=1)
    target: Entity | None = None
    params: dict[str, str] = Field(default_factory=dict)


ACTIONS: dict[str, type[_Action]] = {
    "raise_alarm": RaiseAlarm,
    "set_state": SetState,
    "mark_down": MarkDown,
    "add_causal_relationship": AddCausalRelationship,
    "notify": Notify,
    "run_workflow": RunWorkflow,
}

ActionIn = RaiseAlarm | SetState | MarkDown | AddCausalRelationship | Notify | RunWorkflow


class ScenarioIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    condition: str = Field(min_length=1)
    # Each item is {action name: parameters}; checked one by one for clearer errors.
    actions: list[dict[str, Any]] = Field(min_length=1)


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    entities: dict[str, EntityIn] = Field(min_length=1)
    scenarios: list[ScenarioIn] = Field(min_length=1)
