"""Schemathesis fuzzes every operation in our own OpenAPI document: whatever it sends, no 500.

Driven from a plain test (not schemathesis' pytest plugin, which does not run on pytest 9 yet).
"""

from __future__ import annotations

import schemathesis
import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error


# every operation of the schema, 60 examples each: minutes of calls, more than the suite's default per-test timeout
# on a slow or busy machine (it ran past 300 s there and was cut off mid-example)
@pytest.mark.timeout(900)
def test_no_operation_answers_500(server, stub):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/v1/chat/completions" for op in operations)
    calls: dict[str, int] = {}
    for op in operations:
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def fuzz(case):
            # a fresh connection per call: a reused keep-alive socket that the server has just timed out would
            # fail the POST on the client side, which says nothing about the server
            # generous timeout: a valid body can be the first call of a local model, which then loads (spaCy, ...)
            response = case.call_and_validate(base_url=server.url, headers={**server.headers(), "Connection": "close"},
                                              checks=[not_a_server_error], timeout=180)
            calls[op.path] = calls.get(op.path, 0) + 1
            if response.status_code >= 400:
                # fal's envelope is `detail` (+ error_type), and its cancel answers {"status": "NOT_FOUND"}
                keys = ("detail", "status") if op.path.startswith("/fal/") else ("error",)
                assert any(k in response.json() for k in keys), (op.path, response.text)

        fuzz()
    assert calls.get("/v1/chat/completions", 0) >= 30, calls
