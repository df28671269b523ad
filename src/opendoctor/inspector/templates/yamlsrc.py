"""YAML that remembers where each value came from, so errors can name a line."""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]


class SourceError(ValueError):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


class _PlainLoader(yaml.SafeLoader):
    """YAML without anchors and aliases, nested at most `MAX_DEPTH` deep. Templates need
    neither, and an alias is how a few hundred bytes expand into billions of nodes (or
    into a node that holds itself)."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise SourceError(
                line, "anchors and aliases (& and *) are not allowed in templates: write it out"
            )
        if self.depth >= MAX_DEPTH:
            raise SourceError(line, f"nested deeper than {MAX_DEPTH} levels")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


MAX_DEPTH = 64  # nesting of mappings and sequences; templates need a handful


class Located:
    """Plain data from a YAML text plus the line (1-based) of every value by its path."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Path, int] = {}
        try:
            node = yaml.compose(text, Loader=_PlainLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            raise SourceError(mark.line + 1 if mark else None, str(exc.problem)) from exc
        except yaml.YAMLError as exc:  # e.g. a character YAML does not allow
            raise SourceError(None, str(exc).replace("\n", " ")) from exc
        self.data: Any = None if node is None else self._convert(node, ())

    def _convert(self, node: yaml.Node, path: Path) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in out:
                    line = key_node.start_mark.line + 1
                    raise SourceError(line, f"{key!r} is given twice")
                out[key] = self._convert(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(item, (*path, i)) for i, item in enumerate(node.value)]
        # Scalars: let the safe constructor decide types (ints, bools, nulls, strings).
        return yaml.SafeLoader("").construct_object(node)

    def line(self, path: Path) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())
