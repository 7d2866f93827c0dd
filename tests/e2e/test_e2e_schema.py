"""Schemathesis against the live /openapi.json with a valid token: no 5xx, and every response matches the schema."""

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import sign_up

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 4


def exercise(operation, headers: dict[str, str]) -> None:
    """Sends a few generated requests to one operation and validates each response."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case):
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

    run()


def test_every_operation_answers_within_its_schema(api_url):
    with httpx.Client(base_url=api_url, timeout=30) as client:
        headers = sign_up(client)
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    failures, tried = {}, 0
    for result in schema.get_all_operations():
        operation = result.ok()
        tried += 1
        try:
            exercise(operation, headers)
        except Exception as exc:  # every operation is tried; all failures are reported together
            failures[operation.label] = str(exc)[:2000]
    assert tried >= 20
    assert not failures, "\n\n".join(f"{label}:\n{error}" for label, error in failures.items())
