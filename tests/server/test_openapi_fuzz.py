"""Schemathesis fuzzes every operation in our own OpenAPI document: whatever it sends, no 500.

Driven from a plain test (not schemathesis' pytest plugin, which does not run on pytest 9 yet).
"""

from __future__ import annotations

import schemathesis
import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error


# Every operation of the schema, 30 examples each on SQLite and 12 on PostgreSQL (the parsing and validation this
# fuzzes are the same code on both; the database-specific paths get fewer draws). Examples are drawn afresh each run
# (no example database), so every CI run explores new inputs. Minutes of calls on a slow machine: past the default
# per-test timeout.
@pytest.mark.timeout(900)
def test_no_operation_answers_500(server, stub):
    examples = 12 if (server.settings.database_url or "").startswith("postgresql") else 30
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/v1/chat/completions" for op in operations)
    calls: dict[str, int] = {}
    for op in operations:
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
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
    assert calls.get("/v1/chat/completions", 0) >= examples, calls
