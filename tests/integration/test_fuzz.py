"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis): positive and
negative cases for every operation in /docs.json; no answer may be a 5xx, and every 4xx must be a
JSON error body."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support import Server, train

pytestmark = pytest.mark.slow

MIN_CASES = 500
EXAMPLES_PER_MODE = 300  # per operation; simple GET routes yield one case whatever the number


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz")
    train(home)
    srv = Server("http", home, tmp_path_factory.mktemp("logs")).start()
    yield srv
    srv.stop()


def test_schema_driven_fuzzing_finds_no_5xx_and_only_json_errors(fuzz_server):
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/docs.json")
    calls: Counter = Counter()
    problems: list[str] = []

    def check(case) -> None:
        response = case.call(base_url=fuzz_server.url, timeout=30)
        calls[f"{case.method.upper()} {case.path}"] += 1
        if response.status_code >= 500:
            problems.append(f"{case.method} {case.path} -> {response.status_code}: {str(case.body)[:200]}")
        elif response.status_code >= 400:
            try:
                body = response.json()
                ok = isinstance(body, dict) and body.get("error") and body.get("message")
            except ValueError:
                ok = False
            if not ok:
                problems.append(
                    f"{case.method} {case.path} -> {response.status_code} non-JSON error: "
                    f"{response.text[:200]}"
                )

    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES_PER_MODE,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                check(case)

            try:
                run()
            except Unsatisfiable:
                # an operation without parameters or body (GET /livez, ...) has no negative case
                assert mode is GenerationMode.NEGATIVE, operation.path
    # The health routes are a mounted app, outside BentoML's OpenAPI document: called directly.
    import requests

    for route in ("/health", "/startup", "/ready", "/model"):
        for method in ("GET", "POST", "DELETE"):
            response = requests.request(method, fuzz_server.url + route, timeout=10)
            calls[f"{method} {route}"] += 1
            if response.status_code >= 500:
                problems.append(f"{method} {route} -> {response.status_code}")
    print(f"\nschemathesis cases per operation: {dict(calls)}")
    assert problems == [], problems[:10]
    assert {f"{op.method.upper()} {op.path}" for op in operations} <= set(calls)
    assert "POST /predict" in calls
    assert sum(calls.values()) >= MIN_CASES
