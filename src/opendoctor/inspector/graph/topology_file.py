"""A static topology file: what the VIM does not know (switches, racks, power feeds).

    entities:
      - {type: switch, id: tor-1, name: "top of rack 1", state: up}
      - {type: power_feed, id: pdu-a}
    relations:
      - {source: "switch:tor-1", target: "host:compute1", label: connects}
      - {source: "power_feed:pdu-a", target: "switch:tor-1", label: powers}

Relations may name vertices that neither the file nor the VIM has (yet): they become
placeholders, with a warning, and turn real when their source reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opendoctor.inspector.graph.model import ALARM_TYPES, TopologyGraph, split_key
from opendoctor.inspector.graph.states import Category


class TopologyFileError(ValueError):
    """The file cannot be used; the message says where and why."""


class EntityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    id: str = Field(min_length=1)
    name: str | None = None
    project: str | None = None
    state: str | None = None
    props: dict[str, Any] | None = None

    @field_validator("props")
    @classmethod
    def _storable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # What the API takes is stored as JSON, whose integers stop at 64 bits.
        if value is not None and _has_huge_int(value):
            raise ValueError("holds an integer beyond 64 bits")
        return value


def _has_huge_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, dict):
        return any(_has_huge_int(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_huge_int(v) for v in value)
    return False


class RelationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    target: str
    label: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("source", "target")
    @classmethod
    def _key(cls, value: str) -> str:
        split_key(value)  # raises ValueError with the expected form
        return value


class TopologyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entities: list[EntityIn] = Field(default_factory=list)
    relations: list[RelationIn] = Field(default_factory=list)


@dataclass
class Loaded:
    entities: int = 0
    relations: int = 0
    warnings: list[str] = field(default_factory=list)


def parse(path: Path) -> TopologyIn:
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyFileError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise TopologyFileError(f"{path}: {where}: {exc.problem}") from exc
    try:
        return TopologyIn.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        raise TopologyFileError(f"{path}: {at}: {first['msg']}") from exc


def load(graph: TopologyGraph, topology: TopologyIn) -> Loaded:
    result = Loaded()
    for entity in topology.entities:
        category = Category.ALARM if entity.type in ALARM_TYPES else Category.RESOURCE
        graph.upsert(
            category.value,
            entity.type,
            entity.id,
            name=entity.name or entity.id,
            project=entity.project,
            raw_state=entity.state,
            props=entity.props,
        )
        result.entities += 1
    for rel in topology.relations:
        for key in (rel.source, rel.target):
            if graph.get(key) is None:
                result.warnings.append(
                    f"{rel.source} -[{rel.label}]-> {rel.target}: {key} is not known yet; "
                    "it is a placeholder until something reports it"
                )
        graph.link(rel.source, rel.target, rel.label)
        result.relations += 1
    return result
