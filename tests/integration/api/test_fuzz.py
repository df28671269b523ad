"""Schemathesis, generating requests from the OpenAPI document for every operation of a
real server: no answer is a 5xx, and none breaks the document (an undeclared status, a
body or content type other than declared). The count of requests is printed (-s)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import MONITOR
from tests.integration.pipeline.conftest import ADMIN
from tests.live import live_api

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]
EXAMPLES = 25  # per operation


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    with live_api(tmp_path) as url:
        yield url


def test_no_generated_request_breaks_the_server_or_its_document(live: str) -> None:
    schema = schemathesis.openapi.from_url(live + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # The live stream answers for as long as the client listens: a request to it never
    # ends (tests/unit/api/test_stream.py covers it).
    operations = [op for op in operations if op.path != "/v1/stream"]
    sent = 0
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            nonlocal sent
            sent += 1
            try:
                case.call_and_validate(base_url=live, headers={**ADMIN, **MONITOR}, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as exc:  # collected: none stops the run
                failures.append(f"{case.operation.label}: {exc}")

        call()
    print(
        f"\nschemathesis: {sent} requests over {len(list(schema.get_all_operations()))} operations"
    )
    assert sent >= EXAMPLES * 10
    assert failures == []
