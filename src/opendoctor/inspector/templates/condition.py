"""Conditions over the graph, e.g. ``host_alarm [on] host AND host [contains] server``.

    condition := term (OR term)*
    term      := factor (AND factor)*
    factor    := NOT factor | "(" condition ")" | relation | entity
    relation  := entity "[" label "]" entity

A parsed condition is brought to disjunctive normal form: a list of clauses, each a list
of literals that must all hold. The engine matches one clause at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"\s*(?:(\()|(\))|\[\s*([A-Za-z0-9_.-]+)\s*\]|([A-Za-z_][A-Za-z0-9_]*))")
KEYWORDS = {"and", "or", "not"}
MAX_CLAUSES = 64


class ConditionError(ValueError):
    def __init__(self, column: int | None, message: str) -> None:
        super().__init__(message if column is None else f"column {column}: {message}")
        self.column = column


@dataclass(frozen=True, slots=True)
class Relation:
    source: str
    label: str
    target: str
    negated: bool = False

    def __str__(self) -> str:
        return f"{'NOT ' if self.negated else ''}{self.source} [{self.label}] {self.target}"


@dataclass(frozen=True, slots=True)
class Entity:
    name: str
    negated: bool = False

    def __str__(self) -> str:
        return f"{'NOT ' if self.negated else ''}{self.name}"


Literal = Relation | Entity


@dataclass(frozen=True, slots=True)
class _Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class _And:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class _Or:
    operands: tuple[Node, ...]


Node = Literal | _Not | _And | _Or


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            col = pos + len(text[pos:]) - len(text[pos:].lstrip()) + 1
            raise ConditionError(col, f"unexpected {text[col - 1 :][:12]!r}")
        col = m.start(m.lastindex or 0) + 1
        if m.group(1):
            out.append(("(", "(", col))
        elif m.group(2):
            out.append((")", ")", col))
        elif m.group(3):
            out.append(("label", m.group(3), col))
        else:
            word = m.group(4)
            out.append(
                (word.lower(), word, col) if word.lower() in KEYWORDS else ("name", word, col)
            )
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0
        self.end = len(text) + 1

    def peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def take(self, kind: str, what: str) -> tuple[str, str, int]:
        if self.peek() != kind:
            col = self.tokens[self.i][2] if self.i < len(self.tokens) else self.end
            found = repr(self.tokens[self.i][1]) if self.i < len(self.tokens) else "the end"
            raise ConditionError(col, f"expected {what}, found {found}")
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def condition(self) -> Node:
        terms = [self.term()]
        while self.peek() == "or":
            self.i += 1
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else _Or(tuple(terms))

    def term(self) -> Node:
        factors = [self.factor()]
        while self.peek() == "and":
            self.i += 1
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else _And(tuple(factors))

    def factor(self) -> Node:
        kind = self.peek()
        if kind == "not":
            self.i += 1
            return _Not(self.factor())
        if kind == "(":
            self.i += 1
            inner = self.condition()
            self.take(")", "')'")
            return inner
        _, source, _ = self.take("name", "an entity name, NOT or '('")
        if self.peek() != "label":
            return Entity(source)
        _, label, _ = self.take("label", "a [label]")
        _, target, _ = self.take("name", f"the entity after [{label}]")
        return Relation(source, label, target)


def parse(text: str) -> Node:
    parser = _Parser(text)
    if not parser.tokens:
        raise ConditionError(None, "the condition is empty")
    node = parser.condition()
    if parser.i < len(parser.tokens):
        _, value, col = parser.tokens[parser.i]
        raise ConditionError(col, f"unexpected {value!r} (missing AND/OR?)")
    return node


def _negate(node: Node) -> Node:
    if isinstance(node, Relation):
        return Relation(node.source, node.label, node.target, not node.negated)
    if isinstance(node, Entity):
        return Entity(node.name, not node.negated)
    if isinstance(node, _Not):
        return node.operand
    if isinstance(node, _And):
        return _Or(tuple(_Not(o) for o in node.operands))
    return _And(tuple(_Not(o) for o in node.operands))


def dnf(node: Node) -> list[list[Literal]]:
    """Clauses (OR of ANDs) equivalent to `node`, NOTs pushed down to the literals."""
    if isinstance(node, Relation | Entity):
        return [[node]]
    if isinstance(node, _Not):
        return dnf(_negate(node.operand))
    if isinstance(node, _Or):
        clauses = [c for o in node.operands for c in dnf(o)]
    else:
        clauses = [[]]
        for operand in node.operands:
            clauses = [c + d for c in clauses for d in dnf(operand)]
            if len(clauses) > MAX_CLAUSES:
                break
    if len(clauses) > MAX_CLAUSES:
        raise ConditionError(None, f"the condition expands to over {MAX_CLAUSES} alternatives")
    # A literal repeated in a clause adds nothing; keep the first.
    return [list(dict.fromkeys(c)) for c in clauses]
