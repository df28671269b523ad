"""The JSON query filter over graph vertices (``GET /v1/topology?query=``)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from opendoctor.inspector.graph import RxGraph
from opendoctor.inspector.graph.query import (
    MAX_DEPTH,
    MAX_NODES,
    QueryError,
    compile_query,
    parse_query,
)
from opendoctor.inspector.graph.states import Category

R = Category.RESOURCE
A = Category.ALARM


@pytest.fixture(scope="module")
def graph() -> RxGraph:
    g = RxGraph()
    g.upsert(
        R, "host", "compute1", name="compute1", raw_state="up", props={"rack": "r1", "cores": 64}
    )
    g.upsert(R, "host", "compute2", name="compute2", raw_state="down", props={"rack": None})
    g.upsert(
        R,
        "server",
        "s1",
        name="vm-1",
        project="p1",
        raw_state="ACTIVE",
        props={"flavor": "m1.small", "gpu": True, "cores": 8},
    )
    g.upsert(
        R,
        "server",
        "s2",
        name="vm-10",
        project="p2",
        raw_state="SHUTOFF",
        props={"gpu": 1, "cores": "eight", "tags": ["a"]},
    )
    g.upsert(R, "server", "s3", name="db-1", project="p1", raw_state="ACTIVE")
    g.upsert(A, "alarm", "a1", name="compute2 down", raw_state="major")
    g.link("switch:tor-1", "host:compute1", "connects")  # a placeholder: no name, no state
    for i, v in enumerate(sorted(g.vertices(), key=lambda v: v.key)):
        v.created = v.updated = 1000.0 * (i + 1)
    s3 = g.get("server:s3")
    assert s3 is not None
    s3.deduced_state = "ERROR"  # raw OK, but its host failed: `state` must say ERROR
    return g


# Keys in the order the fixture dates them (updated = 1000 * position).
DATED = [
    "alarm:a1",
    "host:compute1",
    "host:compute2",
    "server:s1",
    "server:s2",
    "server:s3",
    "switch:tor-1",
]
ALL = set(DATED)


def select(graph: RxGraph, query: Any) -> set[str]:
    keep = compile_query(query)
    return {v.key for v in graph.vertices() if keep(v)}


def fails(query: Any) -> QueryError:
    with pytest.raises(QueryError) as info:
        compile_query(query)
    return info.value


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"==": {"type": "server"}}, {"server:s1", "server:s2", "server:s3"}),
        ({"==": {"key": "host:compute1"}}, {"host:compute1"}),
        ({"==": {"id": "s2"}}, {"server:s2"}),
        ({"==": {"name": "vm-1"}}, {"server:s1"}),
        ({"==": {"project": "p1"}}, {"server:s1", "server:s3"}),
        ({"==": {"raw_state": "SHUTOFF"}}, {"server:s2"}),
        ({"==": {"deduced_state": "ERROR"}}, {"server:s3"}),
        ({"==": {"placeholder": True}}, {"switch:tor-1"}),
        ({"==": {"updated": 2000}}, {"host:compute1"}),
        ({"==": {"created": 2000.0}}, {"host:compute1"}),
        ({"==": {"name": None}}, {"switch:tor-1"}),
        ({"!=": {"type": "server"}}, ALL - {"server:s1", "server:s2", "server:s3"}),
        ({"!=": {"name": None}}, ALL - {"switch:tor-1"}),
        ({"!=": {"placeholder": True}}, ALL - {"switch:tor-1"}),
    ],
)
def test_equality(graph: RxGraph, query: Any, expected: set[str]) -> None:
    assert select(graph, query) == expected


def test_state_is_the_aggregated_state(graph: RxGraph) -> None:
    # s3 reports ACTIVE (OK) but is deduced ERROR; the worse of the two is what operators see.
    assert select(graph, {"==": {"state": "ERROR"}}) == {"host:compute2", "server:s3"}
    assert select(graph, {"==": {"state": "OK"}}) == {"host:compute1", "server:s1"}
    assert select(graph, {"==": {"state": "SEVERE"}}) == {"alarm:a1"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"==": {"state": "error"}}, {"host:compute2", "server:s3"}),
        ({"==": {"state": "Error"}}, {"host:compute2", "server:s3"}),
        ({"!=": {"state": "error"}}, ALL - {"host:compute2", "server:s3"}),
        ({"in": {"state": ["error", "suboptimal"]}}, {"host:compute2", "server:s2", "server:s3"}),
        ({"==": {"category": "alarm"}}, {"alarm:a1"}),
        ({"in": {"category": ["Alarm"]}}, {"alarm:a1"}),
        ({"!=": {"category": "resource"}}, {"alarm:a1"}),
        ({"==": {"state": "n/a"}}, {"switch:tor-1"}),
    ],
)
def test_state_and_category_ignore_case(graph: RxGraph, query: Any, expected: set[str]) -> None:
    assert select(graph, query) == expected


@pytest.mark.parametrize(
    "query",
    [
        {"==": {"type": "SERVER"}},
        {"==": {"name": "VM-1"}},
        {"==": {"raw_state": "shutoff"}},
        {"in": {"key": ["HOST:compute1"]}},
        {"==": {"props.rack": "R1"}},
        # Only ==, != and in fold case; a regex says so itself with (?i).
        {"regex": {"state": "error"}},
    ],
)
def test_other_fields_are_case_sensitive(graph: RxGraph, query: Any) -> None:
    assert select(graph, query) == set()


def test_regex_ignore_case_is_the_patterns_choice(graph: RxGraph) -> None:
    assert select(graph, {"regex": {"state": "(?i)^error$"}}) == {"host:compute2", "server:s3"}


@pytest.mark.parametrize(
    ("op", "bound", "expected"),
    [
        ("<", 3000, DATED[:2]),
        ("<=", 3000, DATED[:3]),
        (">", 5000, DATED[5:]),
        (">=", 5000, DATED[4:]),
        ("<", 0, []),
        (">=", 0.5, DATED),
    ],
)
def test_ordering_on_dates(graph: RxGraph, op: str, bound: float, expected: list[str]) -> None:
    assert select(graph, {op: {"updated": bound}}) == set(expected)
    assert select(graph, {op: {"created": bound}}) == set(expected)


def test_ordering_on_props_skips_what_is_not_a_number(graph: RxGraph) -> None:
    # compute1 has 64 cores, s1 has 8, s2 says "eight", the rest have no such prop.
    assert select(graph, {">": {"props.cores": 4}}) == {"host:compute1", "server:s1"}
    assert select(graph, {"<=": {"props.cores": 8}}) == {"server:s1"}
    assert select(graph, {"<": {"props.cores": 1e9}}) == {"host:compute1", "server:s1"}
    # s1's gpu flag is true, which Python alone would order as 1.
    assert select(graph, {">=": {"props.gpu": 1}}) == {"server:s2"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"in": {"type": ["host", "alarm"]}}, {"host:compute1", "host:compute2", "alarm:a1"}),
        ({"in": {"name": ["vm-1", None]}}, {"server:s1", "switch:tor-1"}),
        ({"in": {"updated": [1000, 7000.0]}}, {"alarm:a1", "switch:tor-1"}),
        ({"in": {"placeholder": [False]}}, ALL - {"switch:tor-1"}),
        ({"in": {"props.flavor": ["m1.small", "m1.large"]}}, {"server:s1"}),
        ({"in": {"type": []}}, set()),
    ],
)
def test_in(graph: RxGraph, query: Any, expected: set[str]) -> None:
    assert select(graph, query) == expected


def test_regex_searches_anywhere_unless_anchored(graph: RxGraph) -> None:
    assert select(graph, {"regex": {"name": "^vm-1"}}) == {"server:s1", "server:s2"}
    assert select(graph, {"regex": {"name": "-1$"}}) == {"server:s1", "server:s3"}
    assert select(graph, {"regex": {"name": "down"}}) == {"alarm:a1"}
    assert select(graph, {"regex": {"key": "^host:"}}) == {"host:compute1", "host:compute2"}
    # A null name, a non-string prop or a missing one is simply no match.
    assert select(graph, {"regex": {"project": "."}}) == {"server:s1", "server:s2", "server:s3"}
    assert select(graph, {"regex": {"props.flavor": r"^m1\."}}) == {"server:s1"}
    assert select(graph, {"regex": {"props.cores": "8"}}) == set()


def test_exists(graph: RxGraph) -> None:
    # compute2's rack is there but null: not "present" for an operator.
    assert select(graph, {"exists": "props.rack"}) == {"host:compute1"}
    assert select(graph, {"exists": "props.gpu"}) == {"server:s1", "server:s2"}
    assert select(graph, {"exists": "deduced_state"}) == {"server:s3"}
    assert select(graph, {"exists": "name"}) == ALL - {"switch:tor-1"}
    assert select(graph, {"exists": "placeholder"}) == ALL


def test_props(graph: RxGraph) -> None:
    assert select(graph, {"==": {"props.rack": "r1"}}) == {"host:compute1"}
    # Missing and null are the same to a comparison.
    assert select(graph, {"==": {"props.rack": None}}) == ALL - {"host:compute1"}
    assert select(graph, {"!=": {"props.rack": "r1"}}) == ALL - {"host:compute1"}
    # A flag is not a count, though Python says True == 1; a count is a count, int or float.
    assert select(graph, {"==": {"props.gpu": True}}) == {"server:s1"}
    assert select(graph, {"==": {"props.gpu": 1}}) == {"server:s2"}
    assert select(graph, {"in": {"props.gpu": [1, 2]}}) == {"server:s2"}
    assert select(graph, {"==": {"props.cores": 8.0}}) == {"server:s1"}
    # A list-valued prop matches no scalar and does not break `in`.
    assert select(graph, {"in": {"props.tags": ["a"]}}) == set()
    assert select(graph, {"==": {"props.tags": "a"}}) == set()


def test_nesting(graph: RxGraph) -> None:
    servers_in_trouble = {
        "and": [
            {"==": {"type": "server"}},
            {"or": [{"==": {"state": "error"}}, {"==": {"state": "suboptimal"}}]},
        ]
    }
    assert select(graph, servers_in_trouble) == {"server:s2", "server:s3"}
    assert select(graph, {"not": servers_in_trouble}) == ALL - {"server:s2", "server:s3"}
    assert select(graph, {"not": {"not": {"==": {"id": "s1"}}}}) == {"server:s1"}
    not_p1 = {"and": [{"exists": "project"}, {"not": {"==": {"project": "p1"}}}]}
    assert select(graph, not_p1) == {"server:s2"}
    # One-element lists are allowed, and short-circuit before a later clause is reached.
    assert select(graph, {"and": [{"==": {"type": "alarm"}}]}) == {"alarm:a1"}
    assert select(graph, {"or": [{"==": {"type": "alarm"}}, {"==": {"id": "s1"}}]}) == {
        "alarm:a1",
        "server:s1",
    }
    assert select(graph, {"and": [{"==": {"type": "alarm"}}, {"==": {"type": "host"}}]}) == set()


def nested(levels: int) -> dict[str, Any]:
    """A query `levels` objects deep: nots around a comparison."""
    query: dict[str, Any] = {"==": {"id": "s1"}}
    for _ in range(levels - 1):
        query = {"not": query}
    return query


def test_limits_allow_up_to_the_maximum(graph: RxGraph) -> None:
    deepest = nested(MAX_DEPTH)  # 31 nots: the same as one
    assert select(graph, deepest) == ALL - {"server:s1"}
    widest = {"or": [{"==": {"id": str(i)}} for i in range(MAX_NODES - 1)]}
    assert select(graph, widest) == set()


def test_too_deep() -> None:
    err = fails(nested(MAX_DEPTH + 1))
    assert err.field == "query" + ".not" * MAX_DEPTH
    assert "nested deeper than 32 levels" in str(err)


def test_too_many_nodes() -> None:
    err = fails({"or": [{"exists": "name"} for _ in range(MAX_NODES)]})
    assert err.field == f"query.or[{MAX_NODES - 1}]"
    assert "more than 1000 operators" in str(err)


def test_parse_query(graph: RxGraph) -> None:
    keep = parse_query('{"and": [{"==": {"type": "host"}}, {"exists": "props.rack"}]}')
    assert {v.key for v in graph.vertices() if keep(v)} == {"host:compute1"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not valid JSON: Expecting value"),
        ('{"==": {"type": "server"}', "not valid JSON"),
        ("{'==': {'type': 'server'}}", "not valid JSON"),
        ('{"<": {"updated": NaN}}', "NaN is not allowed"),
        ('{"<": {"updated": -Infinity}}', "-Infinity is not allowed"),
        # The decoder itself recurses; that must be a QueryError, not a crash.
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_bad_json(text: str, problem: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(text)
    assert info.value.field == "query"
    assert problem in str(info.value)


def test_parse_reports_paths_inside_the_json() -> None:
    with pytest.raises(QueryError) as info:
        parse_query(json.dumps({"and": [{"==": {"type": "host"}}, {"regex": {"name": "("}}]}))
    assert info.value.field == "query.and[1].regex.name"
    assert str(info.value).startswith("invalid regular expression '(': missing )")


@pytest.mark.parametrize(
    ("query", "field", "problem"),
    [
        # The shape of a query node.
        ([], "query", "expected an object with exactly one operator (and, or, not, ==,"),
        ("server", "query", "got a string"),
        (None, "query", "got null"),
        ({}, "query", "got 0 keys"),
        ({"==": {"type": "a"}, "!=": {"type": "b"}}, "query", "got 2 keys"),
        ({"and": [{"==": {"type": "a"}}, 3]}, "query.and[1]", "got a number"),
        ({"like": {"name": "vm"}}, "query.like", "unknown operator 'like'; valid: and, or, not"),
        # and / or / not.
        ({"and": []}, "query.and", "'and' needs a non-empty list of queries, got an empty list"),
        ({"or": {"==": {"type": "a"}}}, "query.or", "'or' needs a non-empty list of queries"),
        ({"not": [{"==": {"type": "a"}}]}, "query.not", "got a list"),
        ({"not": {"and": [{"exists": "nmae"}]}}, "query.not.and[0].exists", "unknown field"),
        # The comparison's value object.
        ({"==": "server"}, "query.==", "'==' needs an object with exactly one field"),
        ({"==": {}}, "query.==", "got 0 fields"),
        ({"in": {"type": ["a"], "id": ["b"]}}, "query.in", "got 2 fields"),
        # Fields.
        ({"==": {"nmae": "vm"}}, "query.==.nmae", "unknown field 'nmae'; valid fields: key,"),
        ({"exists": "props."}, "query.exists", "unknown field 'props.'"),
        ({"exists": "rack"}, "query.exists", "props.<name>"),
        ({"exists": ["name"]}, "query.exists", "unknown field ['name']"),
        # Values of the wrong type.
        ({"==": {"placeholder": "yes"}}, "query.==.placeholder", "boolean field, got a string"),
        ({"==": {"updated": "today"}}, "query.==.updated", "'updated' is a number field"),
        ({"!=": {"state": None}}, "query.!=.state", "'state' is a string field, got null"),
        ({"==": {"type": 3}}, "query.==.type", "'type' is a string field, got a number"),
        ({"==": {"props.rack": {"row": 1}}}, "query.==.props.rack", "scalar field, got an object"),
        # in.
        ({"in": {"state": "ERROR"}}, "query.in.state", "'in' needs a list of values, got a string"),
        ({"in": {"state": ["ERROR", 3]}}, "query.in.state[1]", "string field, got a number"),
        ({"in": {"props.tags": [["a"]]}}, "query.in.props.tags[0]", "got a list"),
        # Ordering.
        ({"<": {"name": "m"}}, "query.<.name", "'<' compares numbers: 'name' is a string-or-null"),
        ({">=": {"state": "ERROR"}}, "query.>=.state", "numeric fields: created, updated"),
        ({">": {"placeholder": False}}, "query.>.placeholder", "'placeholder' is a boolean"),
        ({"<=": {"updated": "2024-01-01"}}, "query.<=.updated", "'<=' needs a number, got a"),
        ({"<": {"props.cores": True}}, "query.<.props.cores", "needs a number, got a boolean"),
        # regex.
        ({"regex": {"name": "["}}, "query.regex.name", "invalid regular expression '['"),
        ({"regex": {"name": 1}}, "query.regex.name", "regex needs a pattern string, got a"),
        ({"regex": {"updated": "^1"}}, "query.regex.updated", "regex needs a string field"),
        (
            {"or": [{"exists": "name"}, {"not": {"regex": {"props.x": "(?P<"}}}]},
            "query.or[1].not.regex.props.x",
            "invalid regular expression",
        ),
    ],
)
def test_errors_name_the_culprit(query: Any, field: str, problem: str) -> None:
    err = fails(query)
    assert err.field == field
    assert problem in str(err)
    assert isinstance(err, ValueError)


def test_compile_query_path_prefix() -> None:
    with pytest.raises(QueryError) as info:
        compile_query({"and": [{"==": {"nmae": "x"}}]}, path="filter")
    assert info.value.field == "filter.and[0].==.nmae"


def test_predicate_is_reusable(graph: RxGraph) -> None:
    # Compiled once, evaluated many times, with no state carried between vertices.
    keep = compile_query({"regex": {"name": "^vm"}})
    vertices = graph.vertices() * 3
    assert sum(keep(v) for v in vertices) == 6


def test_a_pattern_that_backtracks_without_end_elsewhere_takes_linear_time() -> None:
    """`(a+)+$` on a long run of a's would take a backtracking engine longer than the
    age of the universe; RE2 answers at once."""
    graph = RxGraph()
    graph.upsert(R, "switch", "tor-a", name="a" * 50_000 + "!")
    started = time.monotonic()
    assert select(graph, {"regex": {"name": "(a+)+$"}}) == set()
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [(r"(a)\1", "backreferences"), ("(?=vm)", "lookaround"), ("x" * 1001, "over 1000")],
)
def test_what_cannot_run_in_linear_time_is_refused(pattern: str, problem: str) -> None:
    err = fails({"regex": {"name": pattern}})
    assert problem in str(err) and err.field == "query.regex.name"
