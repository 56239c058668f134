"""Log lines: JSON or text, request and trace ids, and no secret anywhere — masked where code slips, and a real
`modelyard serve` at DEBUG whose every output line, error body, metric and span is searched for the secrets it used."""

from __future__ import annotations

import json
import logging
import sys

import httpx
import orjson
import pytest

from modelyard.config import Settings
from modelyard.logs import MASK, REQUEST, JSONFormatter, Redactor, RequestInfo, TextFormatter, settings_secrets

from .support.jobs import Receiver
from .support.otlp import Received, create_receiver
from .support.processes import serve, stop
from .support.servers import ServerThread
from .support.waiting import wait_until

ADMIN_KEY = "myd_logs-admin-key-" + "a" * 24
UPSTREAM_KEY = "sk-live-upstream-0123456789abcdef"
UPSTREAM_HEADER = "hdr-secret-0123456789"
WEBHOOK_MASTER = "webhook-master-secret-0123456789"
WRONG_KEY = "myd_not-a-real-key-but-still-secret-0123"


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "modelyard.test", "levelno": logging.WARNING, "levelname": "WARNING",
                                    "msg": msg, "args": args})
    record.__dict__.update(extra)
    return record


def test_the_redactor_masks_key_formats_bearer_credentials_query_keys_and_configured_secrets():
    redact = Redactor(["configured-secret-value", "short", None])
    text = (f"admin {ADMIN_KEY} hook whsec_{'Q' * 40} header 'Authorization: Bearer abcdefgh12345678' "
            "GET /v1beta/models?alt=sse&key=AIzaSomething123 configured-secret-value short")
    out = redact(text)
    for secret in (ADMIN_KEY, "whsec_" + "Q" * 40, "abcdefgh12345678", "AIzaSomething123", "configured-secret-value"):
        assert secret not in out
    assert "?alt=sse&key=***" in out and "Bearer ***" in out
    assert out.endswith(" short")  # too short to mask as a literal: it would mask ordinary words
    assert redact("key myd_abcd...wxyz shown as its display") == "key myd_abcd...wxyz shown as its display"


def test_settings_secrets_names_every_secret_the_settings_hold(tmp_path):
    settings = Settings(data_dir=tmp_path, admin_key=ADMIN_KEY, webhook_secret=WEBHOOK_MASTER, media_secret="m" * 32,
                        models=[{"id": "up", "deployments": [{"backend": "openai", "base_url": "http://x/v1",
                                                              "api_key": UPSTREAM_KEY,
                                                              "headers": {"x-api-key": UPSTREAM_HEADER}}]}])
    assert {ADMIN_KEY, WEBHOOK_MASTER, "m" * 32, UPSTREAM_KEY, UPSTREAM_HEADER} <= set(settings_secrets(settings))


def test_a_json_line_has_the_request_id_the_extras_and_the_traceback_masked():
    fmt = JSONFormatter(Redactor([UPSTREAM_KEY]))
    token = REQUEST.set(RequestInfo("req_abc"))
    try:
        try:
            raise RuntimeError(f"upstream said {UPSTREAM_KEY}")
        except RuntimeError:
            record = _record("failed on %s", "dep/a", deployment="dep/a", attempt=2)
            record.exc_info = sys.exc_info()
        line = fmt.format(record)
    finally:
        REQUEST.reset(token)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "failed on dep/a" and data["level"] == "warning" and data["logger"] == "modelyard.test"
    assert data["request_id"] == "req_abc" and data["deployment"] == "dep/a" and data["attempt"] == 2
    assert "RuntimeError" in data["exception"] and UPSTREAM_KEY not in line and MASK in data["exception"]
    assert "trace_id" not in data  # no span: tracing is off here


def test_a_text_line_names_its_request():
    fmt = TextFormatter(Redactor())
    token = REQUEST.set(RequestInfo("req_xyz"))
    try:
        line = fmt.format(_record("hello"))
    finally:
        REQUEST.reset(token)
    assert " WARNING modelyard.test [req_xyz]: hello" in line
    assert fmt.format(_record("outside")).endswith("WARNING modelyard.test: outside")


@pytest.mark.slow
def test_no_secret_reaches_any_log_line_error_body_metric_or_span(tmp_path, stub_server, stub):
    """A real server at DEBUG with JSON logs and tracing on: keys created and used, wrong keys, a key in a query
    string, upstream failures, a signed webhook; then every secret is looked for in everything it wrote."""
    srv, _ = stub_server
    received, hooks = Received(), Receiver()
    (tmp_path / "modelyard.yaml").write_text(
        "builtin_models: false\n"
        "models:\n"
        "  - id: up\n"
        "    deployments:\n"
        f"      - {{backend: openai, base_url: '{srv.url}/v1', api_key: '${{UPSTREAM_KEY}}', model: stub-model,\n"
        f"         headers: {{x-extra-auth: '{UPSTREAM_HEADER}'}}}}\n")
    with ServerThread(create_receiver(received)) as collector, ServerThread(hooks.app()) as hook_server:
        env = {"MODELYARD_ADMIN_KEY": ADMIN_KEY, "UPSTREAM_KEY": UPSTREAM_KEY,
               "MODELYARD_WEBHOOK_SECRET": WEBHOOK_MASTER,
               "MODELYARD_ALLOW_PRIVATE_URLS": "true", "MODELYARD_JOB_POLL_SECONDS": "0.2",
               "MODELYARD_WEBHOOK_BACKOFF_SECONDS": "0.2", "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
               "OTEL_BSP_SCHEDULE_DELAY": "50"}
        log_file = tmp_path / "server.log"
        proc, url = serve(tmp_path, "--config", "modelyard.yaml", "--log-level", "debug", "--log-format", "json",
                          "--access-log", env=env, output=log_file)
        bodies: list[str] = []  # every answer that is not meant to hand out a secret
        try:
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            with httpx.Client(base_url=url, timeout=30) as http:
                def call(method: str, path: str, key: str | None = ADMIN_KEY, **kw: object) -> httpx.Response:
                    headers = {"Authorization": f"Bearer {key}"} if key else {}
                    r = http.request(method, path, headers={**headers, **kw.pop("headers", {})}, **kw)  # type: ignore
                    bodies.append(r.text)
                    return r
                chat = {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
                assert call("POST", "/v1/chat/completions", json=chat).status_code == 200
                stub.fail_times = 1
                traceparent = f"00-{'1' * 32}-{'2' * 16}-01"
                failed = call("POST", "/v1/chat/completions", json=chat, headers={"traceparent": traceparent})
                assert failed.status_code == 502
                assert call("POST", "/v1/chat/completions", key=WRONG_KEY, json=chat).status_code == 401
                assert call("GET", "/v1beta/models", key=None, params={"key": WRONG_KEY}).status_code == 401
                org = http.post("/api/organizations", headers=admin, json={"name": "acme", "plan": "free"}).json()
                created = http.post(f"/api/organizations/{org['id']}/tokens", headers=admin,
                                    json={"name": "k", "scopes": ["user:read", "user:write"]}).json()["secret"]
                assert call("GET", "/v1beta/models", key=None, params={"key": created}).status_code == 200
                assert call("GET", "/v1/models", key=created).status_code == 200
                hook_secret = http.get("/api/webhook-secret", headers={"Authorization": f"Bearer {created}"}
                                       ).json()["secret"]
                job = call("POST", "/api/jobs", key=created,
                           json={"model_id": "up", "task": "chat", "payload": {"messages": chat["messages"]},
                                 "webhook_url": hook_server.url + "/hook"})
                assert job.status_code == 201, job.text
                ((hook_headers, _),) = hooks.wait_for_calls(1)
                assert hook_headers["webhook-signature"].startswith("v1,")
                metrics = call("GET", "/metrics").text
                assert "modelyard_" in metrics
            wait_until(lambda: any(s.trace_id == "1" * 32 for s in received.spans), 15, "the failed call's spans")
        finally:
            stop(proc)
    output = log_file.read_text()

    secrets = {"admin key": ADMIN_KEY, "upstream key": UPSTREAM_KEY, "upstream header": UPSTREAM_HEADER,
               "webhook master": WEBHOOK_MASTER, "org webhook secret": hook_secret,
               "webhook key": hook_secret.removeprefix("whsec_"), "created key": created, "wrong key": WRONG_KEY}
    spans = orjson.dumps([vars(s) for s in received.spans], default=str).decode()
    for name, secret in secrets.items():
        for where, text in (("the server's output", output), ("an answer", "\n".join(bodies)), ("a span", spans)):
            assert secret not in text, f"the {name} appears in {where}"

    lines = [line for line in output.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    # everything but the start-up banner (printed, not logged) is one JSON object per line
    banner = [line for line in lines if line.startswith("Modelyard ")]
    assert [line for line in lines if not line.startswith("{")] == banner and len(banner) == 1
    assert any(r["logger"] == "uvicorn.access" for r in records)  # uvicorn's lines come through the same formatter
    assert any("key=***" in r["message"] for r in records)
    answered = [r for r in records if r["message"].startswith("answered 502")]
    assert len(answered) == 1
    line = answered[0]
    assert line["request_id"] == failed.headers["x-request-id"] and line["trace_id"] == "1" * 32
    assert (line["model"], line["deployment"], line["upstream_status"], line["attempt"]) == ("up", "up/openai", 500, 1)
    upstream = [r for r in records if r["message"].startswith("upstream failure") and r.get("trace_id") == "1" * 32]
    assert len(upstream) == 1 and upstream[0]["request_id"] == line["request_id"]
    (done,) = [r for r in records if r["message"].startswith(f"job {job.json()['id']} completed")]
    assert done["request_id"] == job.headers["x-request-id"]  # a job's lines name the request that submitted it
