"""Conditions over the graph, e.g. ``host_alarm [on] host AND host [contains] server``.

    condition  := term (OR term)*
    term       := factor (AND factor)*
    factor     := NOT factor | "(" condition ")" | quantified | relation | entity
    quantified := (ALL | ANY) "(" relation "," condition ")"
    relation   := entity "[" label ["*"] "]" entity

A parsed condition is brought to disjunctive normal form: a list of clauses, each a list
of literals that must all hold. The engine matches one clause at a time. A quantified
literal (`ALL(uplink [connects*] host, alarm [on] uplink)`) is one literal of its
clause; the condition inside it has its own normal form. `[label*]` is a chain of one
or more `label` edges (a path through a topology of any depth).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

_TOKEN = re.compile(
    r"\s*(?:(\()|(\))|\[\s*([A-Za-z0-9_.-]+\s*\*?)\s*\]|([A-Za-z_][A-Za-z0-9_]*)|(,))"
)
KEYWORDS = {"and", "or", "not"}
# ALL and ANY are keywords only before "(": an entity may still be called `all`.
QUANTIFIERS = {"all", "any"}
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
    path: bool = False  # `[label*]`: a chain of one or more `label` edges

    def __str__(self) -> str:
        star = "*" if self.path else ""
        return f"{'NOT ' if self.negated else ''}{self.source} [{self.label}{star}] {self.target}"


@dataclass(frozen=True, slots=True)
class Entity:
    name: str
    negated: bool = False

    def __str__(self) -> str:
        return f"{'NOT ' if self.negated else ''}{self.name}"


@dataclass(frozen=True, slots=True)
class Quantified:
    """`ALL(x [label] y, inner)` or `ANY(...)`: over the vertices related to `y` (bound by
    the rest of the clause) that match `x`, every one / some one satisfies `inner`."""

    kind: str  # "all" or "any"
    relation: Relation
    inner: tuple[tuple[Literal, ...], ...]  # the inner condition, in DNF
    text: str
    negated: bool = False

    def __str__(self) -> str:
        return f"{'NOT ' if self.negated else ''}{self.kind.upper()}({self.text})"


Literal = Relation | Entity | Quantified


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
            out.append(("label", m.group(3).replace(" ", ""), col))
        elif m.group(5):
            out.append((",", ",", col))
        else:
            word = m.group(4)
            out.append(
                (word.lower(), word, col) if word.lower() in KEYWORDS else ("name", word, col)
            )
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0
        self.end = len(text) + 1
        self.depth = 0  # quantifiers open around the current position

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
        if self._quantifier_ahead():
            return self.quantified()
        _, source, _ = self.take("name", "an entity name, NOT, ALL(, ANY( or '('")
        if self.peek() != "label":
            return Entity(source)
        return self.relation(source)

    def relation(self, source: str) -> Relation:
        _, label, _ = self.take("label", "a [label]")
        path = label.endswith("*")
        label = label.removesuffix("*")
        _, target, _ = self.take("name", f"the entity after [{label}]")
        return Relation(source, label, target, path=path)

    def _quantifier_ahead(self) -> bool:
        tok = self.tokens[self.i] if self.i < len(self.tokens) else None
        nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
        return (
            tok is not None
            and tok[0] == "name"
            and tok[1].lower() in QUANTIFIERS
            and nxt is not None
            and nxt[0] == "("
        )

    def quantified(self) -> Quantified:
        _, word, col = self.tokens[self.i]
        if self.depth:
            raise ConditionError(
                col, f"{word.upper()}( inside another ALL( or ANY( is not supported"
            )
        self.i += 2
        _, source, _ = self.take("name", f"the relation {word.upper()}( is over")
        relation = self.relation(source)
        self.take(",", "',' and the condition each related entity is held to")
        start = self.tokens[self.i][2] - 1 if self.i < len(self.tokens) else self.end - 1
        self.depth += 1
        inner = self.condition()
        self.depth -= 1
        _, _, close = self.take(")", "')'")
        text = f"{relation}, {self.text[start : close - 1].strip()}"
        clauses = tuple(tuple(c) for c in dnf(inner))
        return Quantified(word.lower(), relation, clauses, text)


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
        return replace(node, negated=not node.negated)
    if isinstance(node, Entity):
        return Entity(node.name, not node.negated)
    if isinstance(node, Quantified):
        return replace(node, negated=not node.negated)
    if isinstance(node, _Not):
        return node.operand
    if isinstance(node, _And):
        return _Or(tuple(_Not(o) for o in node.operands))
    return _And(tuple(_Not(o) for o in node.operands))


def dnf(node: Node) -> list[list[Literal]]:
    """Clauses (OR of ANDs) equivalent to `node`, NOTs pushed down to the literals."""
    if isinstance(node, Relation | Entity | Quantified):
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
