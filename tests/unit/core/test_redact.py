"""Secrets out of logs, error texts and API answers."""

from __future__ import annotations

import logging

import pytest

from opendoctor.core.redact import redact
from opendoctor.infra.logs import JsonFormatter, TextFormatter


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "POST https://vnfm:s3cr3t@vnfm.example/cb?token=abc&x=1: refused",
            "POST https://vnfm:***@vnfm.example/cb?token=***&x=1: refused",
        ),
        (
            "amqp://opendoctor:s3cr3t@mq1:5672/?exchange=x&routing_key=k",
            "amqp://opendoctor:***@mq1:5672/?exchange=x&routing_key=k",
        ),
        ("http://h/x?api_key=s3cr3t&Password=s3cr3t", "http://h/x?api_key=***&Password=***"),
        (
            "https://a:s3cr3t@h1/ and https://b:s3cr3t@h2/",
            "https://a:***@h1/ and https://b:***@h2/",
        ),
        ("http://user@host/ and no secret", "http://user@host/ and no secret"),
        ("status=down host=compute1", "status=down host=compute1"),
    ],
)
def test_passwords_and_secret_parameters_are_hidden(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_log_lines_carry_no_secret(formatter: logging.Formatter) -> None:
    url = "https://vnfm:s3cr3t@vnfm.example/cb?token=s3cr3t"
    record = logging.LogRecord("x", logging.WARNING, "f", 1, "failed %s", (url,), None)
    record.url = url  # an `extra` field, as the notifier logs it
    line = formatter.format(record)
    assert "s3cr3t" not in line and "vnfm.example/cb" in line
