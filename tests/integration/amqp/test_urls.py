"""AMQP URLs: the alarm action form, the consumer's listen form, and clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from opendoctor.infra.amqpurl import BrokerUrl, parse_action_url, parse_broker_url, parse_listen_url
from opendoctor.notifier.rules import AlarmBody

ACTION = "amqp://vnfm:s3cret@broker.example:5673/prod?exchange=opendoctor.alarms&routing_key=a.b"


def test_an_action_url_names_broker_vhost_exchange_and_routing_key() -> None:
    t = parse_action_url(ACTION)
    assert t.broker == BrokerUrl("amqp", "broker.example", 5673, "vnfm", "s3cret", "prod")
    assert (t.exchange, t.routing_key) == ("opendoctor.alarms", "a.b")
    assert "s3cret" not in t.broker.safe and "s3cret" not in repr(t)
    assert t.broker.url == "amqp://vnfm:s3cret@broker.example:5673/prod"


@pytest.mark.parametrize(
    ("url", "vhost", "port", "user"),
    [
        ("amqp://h?exchange=e&routing_key=k", "/", 5672, "guest"),
        ("amqp://h/?exchange=e&routing_key=k", "/", 5672, "guest"),
        ("amqp://h/%2F?exchange=e&routing_key=k", "/", 5672, "guest"),
        ("amqps://u:p@h/team%2Fa?exchange=e&routing_key=k", "team/a", 5671, "u"),
    ],
)
def test_defaults_and_vhosts(url: str, vhost: str, port: int, user: str) -> None:
    broker = parse_action_url(url).broker
    assert (broker.vhost, broker.port, broker.user) == (vhost, port, user)


BAD_ACTIONS = [
    ("amqp://h/?routing_key=k", "exchange name is missing"),
    ("amqp://h/?exchange=&routing_key=k", "exchange name is missing"),
    ("amqp://h/?exchange=e", "routing key is missing"),
    ("amqp://h/?exchange=e&routing_key=", "routing key is missing"),
    ("amqp://h/?exchange=amq.topic&routing_key=k", "reserved"),
    ("amqp://h/?exchange=a%20b&routing_key=k", "character ' ' is not allowed"),
    ("amqp://h/?exchange=e&routing_key=a.*", "wildcards of binding keys"),
    ("amqp://h/?exchange=e&routing_key=k&exchange=f", "'exchange' is given twice"),
    ("amqp://h/?exchange=e&routing_key=k&routingkey=k", "unknown query parameter 'routingkey'"),
    ("amqp://h/a/b?exchange=e&routing_key=k", "the path is the virtual host"),
    ("amqp:///?exchange=e&routing_key=k", "has no host"),
    ("amqp://h:99999/?exchange=e&routing_key=k", "not a valid URL"),
    ("amqp://h/?exchange=e&routing_key=k#frag", "write the wildcard '#' as %23"),
    (f"amqp://h/?exchange={'e' * 256}&routing_key=k", "longer than 255 bytes"),
]


@pytest.mark.parametrize(("url", "problem"), BAD_ACTIONS)
def test_bad_action_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="AMQP action") as info:
        parse_action_url(url)
    assert problem in str(info.value)


@pytest.mark.parametrize(("url", "problem"), BAD_ACTIONS[:4])
def test_the_alarm_api_rejects_bad_amqp_actions_naming_the_field(url: str, problem: str) -> None:
    body = {
        "name": "vm-failure",
        "type": "event",
        "event_rule": {"event_type": "compute.instance.update"},
        "ok_actions": ["http://consumer/ok"],
        "alarm_actions": ["http://consumer/failure", url],
    }
    with pytest.raises(ValidationError) as info:
        AlarmBody.model_validate(body)
    [error] = info.value.errors()
    assert error["loc"] == ("alarm_actions", 1)
    assert problem in error["msg"]


def test_the_alarm_api_accepts_amqp_actions() -> None:
    body = AlarmBody.model_validate(
        {
            "name": "vm-failure",
            "type": "event",
            "event_rule": {"event_type": "compute.instance.update"},
            "alarm_actions": [ACTION, ACTION.replace("amqp:", "amqps:")],
        }
    )
    assert body.alarm_actions == [ACTION, ACTION.replace("amqp:", "amqps:")]


def test_listen_urls_take_a_binding_key_and_an_optional_queue() -> None:
    t = parse_listen_url("amqp://h/?exchange=opendoctor.alarms")
    assert (t.exchange, t.routing_key, t.queue) == ("opendoctor.alarms", "#", None)
    t = parse_listen_url("amqp://h/?exchange=x&routing_key=alarm.*.project-a&queue=vnfm-a")
    assert (t.routing_key, t.queue) == ("alarm.*.project-a", "vnfm-a")
    assert parse_listen_url("amqp://h/?exchange=x&routing_key=alarm.%23").routing_key == "alarm.#"
    with pytest.raises(ValueError, match="write the wildcard '#' as %23"):
        parse_listen_url("amqp://h/?exchange=x&routing_key=alarm.#")
    with pytest.raises(ValueError, match="unknown query parameter 'topic'"):
        parse_listen_url("amqp://h/?exchange=x&topic=y")
    with pytest.raises(ValueError, match="exchange name is missing"):
        parse_listen_url("amqp://h/")


def test_broker_urls() -> None:
    assert parse_broker_url("amqp://127.0.0.1").safe == "amqp://guest@127.0.0.1:5672/"
    with pytest.raises(ValueError, match="scheme must be amqp or amqps"):
        parse_broker_url("http://127.0.0.1:5672/")
    with pytest.raises(ValueError, match="unknown query parameter 'heartbeat'"):
        parse_broker_url("amqp://h/?heartbeat=5")
