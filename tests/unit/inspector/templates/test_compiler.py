"""Template validation: what a bad template is told, line by line."""

from __future__ import annotations

import pytest

from opendoctor.inspector.templates import TemplateError, compile_template
from opendoctor.inspector.templates.condition import ConditionError, dnf, parse
from opendoctor.inspector.templates.defaults import load_defaults
from tests.integration.pipeline.test_templates_api import BUILT_INS


def template(condition: str, actions: str, entities: str = "") -> str:
    return f"""name: t
entities:
  alarm: {{category: ALARM, name: x.down}}
  host: {{type: host}}
  server: {{type: server}}
{entities}scenarios:
  - condition: {condition}
    actions:
{actions}"""


RAISE = "      - raise_alarm: {target: server, name: y, causing_alarm: alarm}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(TemplateError) as caught:
        compile_template(text)
    return caught.value.problems


def test_a_good_template_compiles_into_clauses_and_plans() -> None:
    t = compile_template(template("alarm [on] host AND host [contains] server", RAISE))
    (scenario,) = t.scenarios
    (clause,) = scenario.clauses
    assert clause.entities == ("alarm", "host", "server")
    # A search can start from any entity and reach the others.
    assert set(clause.plans) == {"alarm", "host", "server"}
    assert all(len(steps) == 2 for steps in clause.plans.values())


def test_unknown_entity_is_named_with_its_line() -> None:
    (p,) = problems(template("alarm [on] hots AND hots [contains] server", RAISE))
    assert p.startswith("line 7:")
    assert "'hots', which is not an entity (known: alarm, host, server)" in p


def test_unknown_action_lists_the_known_ones() -> None:
    (p,) = problems(template("alarm [on] host", "      - reboot: {target: host}\n"))
    assert p.startswith("line 9:") and "unknown action 'reboot'" in p
    assert "raise_alarm" in p and "run_workflow" in p


def test_all_negative_alternative_is_refused() -> None:
    found = problems(template("alarm [on] host OR NOT alarm [on] server", RAISE))
    assert any("is all negative" in p for p in found)


def test_not_of_a_lone_entity_is_refused() -> None:
    found = problems(template("alarm [on] host AND NOT server", RAISE))
    assert any("negate a relation" in p for p in found)


def test_action_entities_must_be_bound_in_every_alternative() -> None:
    found = problems(template("alarm [on] server OR alarm [on] host", RAISE))
    assert any(
        "target 'server' is not bound by the alternative 'alarm [on] host'" in p for p in found
    )


def test_entities_of_an_alternative_must_be_linked() -> None:
    extra = "  other: {type: host}\n"
    found = problems(template("alarm [on] server AND other", RAISE, extra))
    assert any("are not all linked by relations" in p for p in found)


def test_cause_must_be_an_alarm_entity() -> None:
    action = "      - raise_alarm: {target: server, name: y, causing_alarm: host}\n"
    found = problems(template("alarm [on] host AND host [contains] server", action))
    assert any("must be an alarm entity" in p for p in found)


def test_bad_parameters_and_regex_are_reported_with_lines() -> None:
    text = template(
        "alarm [on] host",
        "      - set_state: {target: host, state: PURPLE}\n",
        "  bad: {type: host, name: {regex: '('}}\n",
    )
    found = problems(text)
    assert any(p.startswith("line 6:") and "bad regex" in p for p in found)
    assert any(p.startswith("line 10:") and "set_state.state" in p for p in found)


def test_yaml_syntax_errors_name_the_line() -> None:
    (p,) = problems("name: t\nentities: {a: [\n")
    assert p.startswith("line 3:")


def test_a_template_that_would_keep_its_own_alarm_alive_is_refused() -> None:
    echo = """name: echo
entities:
  any: {category: ALARM}
  host: {type: host}
scenarios:
  - condition: any [on] host
    actions:
      - raise_alarm: {target: host, name: host.echo, causing_alarm: any}
"""
    (p,) = problems(echo)
    assert "a cycle of causes: host.echo → host.echo" in p


def test_a_cycle_across_templates_is_refused() -> None:
    first = """name: first
entities:
  a: {category: ALARM, name: b.alarm}
  host: {type: host}
scenarios:
  - condition: a [on] host
    actions:
      - raise_alarm: {target: host, name: a.alarm, causing_alarm: a}
"""
    second = first.replace("first", "second").replace("b.alarm", "TMP")
    second = second.replace("a.alarm", "b.alarm").replace("TMP", "a.alarm")
    one = compile_template(first)
    with pytest.raises(TemplateError) as caught:
        compile_template(second, "second", [one])
    assert "a cycle of causes" in str(caught.value)
    # Alone, each is fine.
    compile_template(second)


def test_the_built_in_templates_are_valid_together() -> None:
    assert {t.name for t in load_defaults()} == BUILT_INS


def test_conditions_reach_disjunctive_normal_form() -> None:
    clauses = dnf(parse("a [on] b AND (b [x] c OR NOT (c [y] d AND d [z] e))"))
    shown = [[str(lit) for lit in clause] for clause in clauses]
    assert shown == [
        ["a [on] b", "b [x] c"],
        ["a [on] b", "NOT c [y] d"],
        ["a [on] b", "NOT d [z] e"],
    ]


@pytest.mark.parametrize(
    ("text", "column"),
    [("a [on]", 7), ("a [on] b c", 10), ("(a [on] b", 10), ("a [on] b AND", 13), ("a ? b", 3)],
)
def test_condition_syntax_errors_give_the_column(text: str, column: int) -> None:
    with pytest.raises(ConditionError) as caught:
        parse(text)
    assert caught.value.column == column
