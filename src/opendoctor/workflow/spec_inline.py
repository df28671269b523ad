"""Inline parameters, as Mistral writes them after an action's name or in an engine
command: ``std.echo output=<% $.x %> n=1`` or ``fail(msg="why")``.

A value is a YAQL or Jinja expression, a quoted string, JSON (a number, true, false,
null, a list or an object), or a bare word taken as a string.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = ["parse_inline", "parse_params"]

_NAME_RE: Final = re.compile(r"[^\s()=,]+")
_KEY_RE: Final = re.compile(r"[A-Za-z_][\w-]*")


def _scan_value(text: str, i: int, stops: str) -> tuple[str, Any, int]:
    """The raw text and value of the parameter value starting at ``text[i]``."""
    for opener, closer in (("<%", "%>"), ("{{", "}}")):
        if text.startswith(opener, i):
            end = text.find(closer, i + 2)
            if end < 0:
                raise ValueError(f"{opener} without {closer}")
            raw = text[i : end + 2]
            return raw, raw, end + 2
    if text[i] in "\"'":
        quote, j = text[i], i + 1
        while j < len(text) and text[j] != quote:
            j += 2 if text[j] == "\\" else 1
        if j >= len(text):
            raise ValueError("a quoted value is not closed")
        raw = text[i : j + 1]
        body = raw[1:-1]
        value = json.loads(raw) if quote == '"' else body.replace("\\'", "'")
        return raw, value, j + 1
    if text[i] in "[{":
        depth, j, quote = 0, i, ""
        while j < len(text):
            ch = text[j]
            if quote:
                if ch == "\\":
                    j += 1
                elif ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if j >= len(text):
            raise ValueError("a bracket is not closed")
        raw = text[i : j + 1]
        return raw, json.loads(raw), j + 1
    j = i
    while j < len(text) and not text[j].isspace() and text[j] not in stops:
        j += 1
    raw = text[i:j]
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return raw, value, j


def parse_params(text: str, stops: str = "") -> dict[str, Any]:
    params: dict[str, Any] = {}
    i = 0
    while True:
        while i < len(text) and (text[i].isspace() or text[i] in stops):
            i += 1
        if i >= len(text):
            return params
        key_match = _KEY_RE.match(text, i)
        if key_match is None or not text.startswith("=", key_match.end()):
            raise ValueError(f"expected name=value at {text[i : i + 20]!r}")
        key = key_match.group()
        i = key_match.end() + 1
        if i >= len(text) or text[i].isspace():
            raise ValueError(f"no value after {key}=")
        if key in params:
            raise ValueError(f"parameter {key!r} given twice")
        _raw, params[key], i = _scan_value(text, i, stops)


def parse_inline(text: str) -> tuple[str, dict[str, Any]]:
    """An action or workflow reference and its inline parameters."""
    name_match = _NAME_RE.match(text.strip())
    if name_match is None or "<%" in name_match.group() or "{{" in name_match.group():
        raise ValueError("must start with a plain name")
    rest = text.strip()[name_match.end() :]
    if rest and not rest[0].isspace():
        raise ValueError(f"unexpected {rest[:20]!r} after the name")
    return name_match.group(), parse_params(rest)
