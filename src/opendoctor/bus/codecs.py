"""How the messages of a topic travel on a broker: Python object ⇄ bytes."""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, Protocol, TypeVar

import orjson

from opendoctor.core.model import Event

T = TypeVar("T")


class Codec(Protocol):
    """How the messages of one topic travel: Python object ⇄ bytes."""

    def encode(self, message: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...

    def from_json(self, value: Any) -> Any:
        """The message from its JSON value already parsed (one element of a batch)."""


class JsonCodec:
    """Plain JSON values (dicts, lists, strings, numbers), as they are."""

    def encode(self, message: Any) -> bytes:
        return orjson.dumps(message)

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)

    def from_json(self, value: Any) -> Any:
        return value


class DataclassCodec(Generic[T]):
    """A dataclass as a JSON object of its fields; unknown fields are ignored on decode,
    so a newer publisher's extra field does not stop an older subscriber."""

    def __init__(self, cls: type[T]) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        self.cls = cls
        self.fields = frozenset(f.name for f in dataclasses.fields(cls))

    def encode(self, message: Any) -> bytes:
        if not isinstance(message, self.cls):
            raise TypeError(f"expected {self.cls.__name__}, got {type(message).__name__}")
        return orjson.dumps(message)

    def decode(self, data: bytes) -> T:
        return self.from_json(orjson.loads(data))

    def from_json(self, raw: Any) -> T:
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object for {self.cls.__name__}")
        return self.cls(**{k: v for k, v in raw.items() if k in self.fields})


EVENT_CODEC: DataclassCodec[Event] = DataclassCodec(Event)
# The topics opendoctor uses, and what they carry. Other topics default to JSON.
CODECS: dict[str, Codec] = {"events": EVENT_CODEC}
