"""Workflow expressions: YAQL and sandboxed Jinja2, whole values and interpolation,
Mistral's functions, errors that name the expression, bounds, and the compile cache."""

from __future__ import annotations

import time
import tracemalloc
import uuid
from typing import Any

import pytest

from opendoctor.workflow import expressions
from opendoctor.workflow.expressions import (
    ExpressionError,
    Scope,
    check,
    compile_cache_size,
    evaluate,
    has_expression,
)

DATA = {"host": "node-1", "servers": [{"id": "a", "ok": True}, {"id": "b", "ok": False}], "n": 2}


def _task(name: str | None) -> dict[str, Any] | None:
    if name in (None, "current"):
        return {"id": "t-1", "name": "current", "state": "RUNNING", "result": None}
    if name == "list":
        return {"id": "t-0", "name": "list", "state": "SUCCESS", "result": [1, 2, 3]}
    return None


def _execution() -> dict[str, Any]:
    return {"id": "ex-1", "name": "wf", "input": {"host": "node-1"}, "state": "RUNNING"}


@pytest.fixture
def scope() -> Scope:
    return Scope(DATA, task=_task, execution=_execution, env={"region": "one"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<% $.n %>", 2),
        ("  <% $.servers.select($.id) %>  ", ["a", "b"]),
        ("<% $.servers.where($.ok).first() %>", {"id": "a", "ok": True}),
        ("<% dict(a => $.n) %>", {"a": 2}),
        ("<% set(1, 1) %>", [1]),
        ("<% $.n > 1 and $.host = 'node-1' %>", True),
        ("{{ _.n }}", 2),
        ("{{ _.servers | map(attribute='id') | list }}", ["a", "b"]),
        ("{{ {'a': {'b': _.n}} }}", {"a": {"b": 2}}),
        ("{{ _.n > 1 }}", True),
    ],
)
def test_a_whole_expression_gives_the_raw_value(scope: Scope, text: str, expected: Any) -> None:
    assert evaluate(text, scope) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host <% $.host %> has <% $.n %>", "host node-1 has 2"),
        ("ids=<% $.servers.select($.id) %>", 'ids=["a", "b"]'),
        ("<% $.n %> <% null %> <% true %>", "2 null true"),
        ("first <% $.servers[0] %>", 'first {"id": "a", "ok": true}'),
        ("host {{ _.host }} has {{ _.n }}", "host node-1 has 2"),
        ("ids={{ _.servers | map(attribute='id') | list }}", 'ids=["a", "b"]'),
        ("{{ none }} {{ true }}", "null true"),
        ("{% for s in _.servers %}{{ s.id }};{% endfor %}", "a;b;"),
        ("{{ _.n }}{{ _.n }}", "22"),
    ],
)
def test_text_with_expressions_is_interpolated_as_json(
    scope: Scope, text: str, expected: str
) -> None:
    assert evaluate(text, scope) == expected


def test_dicts_and_lists_are_walked_keys_included(scope: Scope) -> None:
    value = {"<% $.host %>": ["<% $.n %>", "{{ _.n + 1 }}", 7, None], "plain": "text"}
    assert evaluate(value, scope) == {"node-1": [2, 3, 7, None], "plain": "text"}
    assert evaluate(("a", 1), scope) == ["a", 1]
    assert evaluate(3.5, scope) == 3.5


def test_mistral_functions_in_yaql(scope: Scope) -> None:
    assert evaluate("<% task(list).result %>", scope) == [1, 2, 3]
    assert evaluate("<% task('list').state %>", scope) == "SUCCESS"
    assert evaluate("<% task().name %>", scope) == "current"
    assert evaluate("<% task(nothing) %>", scope) is None
    assert evaluate("<% execution().input.host %>", scope) == "node-1"
    assert evaluate("<% env().region %>", scope) == "one"
    assert evaluate("<% json_parse('{\"a\": [1]}') %>", scope) == {"a": [1]}
    assert evaluate("<% json_dump($.servers[1]) %>", scope) == '{"id": "b", "ok": false}'
    assert uuid.UUID(evaluate("<% uuid() %>", scope))


def test_mistral_functions_in_jinja(scope: Scope) -> None:
    assert evaluate("{{ task('list').result }}", scope) == [1, 2, 3]
    assert evaluate("{{ task().name }}", scope) == "current"
    assert evaluate("{{ execution().id }}", scope) == "ex-1"
    assert evaluate("{{ env().region }}", scope) == "one"
    assert evaluate("{{ json_parse('[1, 2]') }}", scope) == [1, 2]
    assert evaluate("{{ _.servers[0] | json_dump }}", scope) == '{"id": "a", "ok": true}'
    assert uuid.UUID(evaluate("{{ uuid() }}", scope))


def test_results_are_plain_json_values(scope: Scope) -> None:
    value = evaluate("<% $.servers %>", scope)
    assert type(value) is list
    assert all(type(item) is dict for item in value)
    assert isinstance(evaluate("<% now() %>", scope), str)


def test_has_expression() -> None:
    assert has_expression("<% $.x %>")
    assert has_expression("a {{ _.x }} b")
    assert has_expression("{% if true %}x{% endif %}")
    assert has_expression({"k": ["plain", {"deep": "<% 1 %>"}]})
    assert has_expression({"<% $.k %>": 1})
    assert not has_expression("100% <ok> {not jinja}")
    assert not has_expression(["a", 1, None, {"b": True}])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<% $.a + %>", "YAQL syntax error"),
        ("<% %>", "YAQL syntax error"),
        ("x <% ) %>", "YAQL syntax error"),
        ("{{ _.a + }}", "Jinja syntax error"),
        ("{% for x %}", "Jinja syntax error"),
        ("<% $.a %> and {{ _.b }}", "mixes YAQL"),
    ],
)
def test_check_refuses_what_does_not_compile(text: str, problem: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        check({"k": [text]})
    assert problem in str(caught.value)
    assert repr(text) in str(caught.value)


def test_check_accepts_good_expressions_and_plain_values() -> None:
    check({"a": "<% $.x.where($ > 1) %>", "b": ["{{ _.y | length }}", 1, None], "c": "text"})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<% $.missing %>", "no key 'missing'"),
        ("<% $.host + 1 %>", "<% $.host + 1 %>"),
        ("<% 1 / 0 %>", "division"),
        ("<% $.n.foo() %>", "foo"),
        ("{{ _.missing }}", "missing"),
        ("text {{ _.missing.deeper }}", "missing"),
        ("{{ 1 / 0 }}", "division"),
        ("<% json_parse('nope') %>", "Expecting value"),
    ],
)
def test_evaluation_errors_name_the_expression(scope: Scope, text: str, problem: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate({"key": text}, scope)
    message = str(caught.value)
    assert repr(text) in message
    assert problem in message


def test_the_jinja_sandbox_holds(scope: Scope) -> None:
    for text in (
        "{{ ''.__class__.__mro__ }}",
        "{{ _.servers.append(1) }}",
        "{{ _.__class__ }}",
    ):
        with pytest.raises(ExpressionError, match="unsafe"):
            evaluate(text, scope)
    assert len(DATA["servers"]) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "<% range(0, 100000000).sum() %>",
        "<% range(0, 1000).select(range(0, 1000).sum()).sum() %>",
        "<% range(0, 100000000).toList() %>",
        "<% 'a' * 100000000 %>",
        "<% [1] * 100000000 %>",
        "<% 100000000 * [1] %>",
        "<% pow(7, 100000000) %>",
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        "{{ range(100000000) | list }}",
        "{{ 'a' * 100000000 }}",
        "{{ [1] * 100000000 }}",
        "{{ 2 ** 100000000 }}",
        "{% for i in range(5000) %}{{ _.servers }}{% endfor %}",
    ],
)
def test_runaway_expressions_are_stopped_quickly(scope: Scope, text: str) -> None:
    started = time.monotonic()
    with pytest.raises(ExpressionError):
        evaluate(text, scope)
    # The budget is about a second of YAQL calls; the margin is for a busy CI machine.
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "text",
    ["<% [1] * 100000000 %>", "<% 'ab' * 100000000 %>", "{{ [1] * 100000000 }}"],
)
def test_repetition_is_refused_before_it_allocates(scope: Scope, text: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ExpressionError):
            evaluate(text, scope)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024


def test_a_budget_does_not_stop_ordinary_work(scope: Scope) -> None:
    assert evaluate("<% range(0, 1000).select($ * 2).sum() %>", scope) == 999000
    items = list(range(2000))
    assert evaluate("{{ _ | sum }}", Scope(items)) == sum(items)


def test_long_jinja_templates_are_refused() -> None:
    text = "{{ _.x }}" + " " * expressions.MAX_JINJA_TEXT
    with pytest.raises(ExpressionError, match="over"):
        check(text)


def test_a_compiled_expression_is_cached(scope: Scope) -> None:
    expressions._compile.cache_clear()
    text = "<% $.servers.where($.ok).select($.id) %>"
    assert evaluate(text, scope) == ["a"]
    assert compile_cache_size() == 1
    info = expressions._compile.cache_info()
    assert evaluate(text, scope) == ["a"]
    assert evaluate({"again": text}, scope) == {"again": ["a"]}
    assert compile_cache_size() == 1
    assert expressions._compile.cache_info().hits == info.hits + 2
    assert evaluate("plain text", scope) == "plain text"
    assert compile_cache_size() == 1


def test_scopes_do_not_leak_between_evaluations() -> None:
    first = Scope({"x": 1}, task=lambda name: {"name": "one"})
    second = Scope({"x": 2}, task=lambda name: {"name": "two"})
    text = "<% [$.x, task().name] %>"
    assert evaluate(text, first) == [1, "one"]
    assert evaluate(text, second) == [2, "two"]
    assert evaluate("{{ [_.x, task().name] }}", second) == [2, "two"]
