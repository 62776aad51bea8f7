"""The API fuzzed from its own OpenAPI schema: whatever comes in, never a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def app(parrot, tmp_path_factory):
    from rejoinder.serve.app import create_app
    from rejoinder.serve.server import Settings

    db = tmp_path_factory.mktemp("fuzz") / "sessions.db"
    # Short replies keep a few hundred generated requests quick.
    return create_app(parrot, Settings(db=f"sqlite:///{db}", max_tokens=8, default_max_tokens=4))


def test_no_request_makes_the_server_fail(app):
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8  # chat completions, models, health, the sessions routes

    failures = []
    for operation in operations:

        @given(operation.as_strategy())
        @settings(
            max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(case):
            response = case.call()
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, case.body, response.text))

        fuzz()
    assert not failures, failures[:3]
