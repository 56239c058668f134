"""Tracing through a real server exporting over OTLP/HTTP (as the OTEL_* environment says) to a receiver here:
the span tree of a retried call, fallbacks, streams, jobs, trace context in and out, and the log lines of failures."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from modelyard.server.app import create_app

from ..conftest import Running, make_settings, running, server_fixture
from ..support.otlp import Received, Span, create_receiver
from ..support.servers import ServerThread, free_port
from ..support.waiting import wait_until
from ..support.workers import Worker, token_for

UPSTREAM_KEY = "sk-upstream-tracing-test-0123456789"


def traced_models(stub_url: str) -> list[dict[str, Any]]:
    up = {"backend": "openai", "base_url": stub_url + "/v1", "api_key": UPSTREAM_KEY, "model": "stub-model",
          "timeout": 5}
    return [
        # `a` weighs more, so it is tried first; the stub's failures land there and the retry goes to `b`
        {"id": "traced", "deployments": [{**up, "name": "a", "weight": 2}, {**up, "name": "b"}]},
        {"id": "lonely", "fallbacks": ["traced"],
         "deployments": [{"backend": "openai", "name": "dead", "base_url": f"http://127.0.0.1:{free_port()}/v1",
                          "model": "lonely-model", "timeout": 2, "connect_timeout": 1}]},
        {"id": "failing", "deployments": [{**up, "name": "only"}]},
        {"id": "echo", "deployments": [{"backend": "echo"}]},
    ]


@contextlib.contextmanager
def traced_server(tmp: Path, database_url: str | None, stub_url: str) -> Iterator[tuple[Running, Received]]:
    received = Received()
    with ServerThread(create_receiver(received)) as collector:
        settings = make_settings(tmp, database_url=database_url, models=traced_models(stub_url),
                                 cooldown_failures=1_000_000, job_poll_seconds=0.2)
        with pytest.MonkeyPatch.context() as env:  # read once, when the app builds its exporter
            env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
            env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
            env.setenv("OTEL_SERVICE_NAME", "modelyard-test")
            app = create_app(settings)
        with ServerThread(app) as srv:
            yield Running(url=srv.url, settings=settings, app=app, thread=srv), received


traced = server_fixture("traced", traced_server)


def _parent() -> tuple[str, str, str]:
    """A client's trace: (trace id, its span id, the traceparent header carrying them)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def _root(received: Received, name: str, trace_id: str, service: str | None = None, kind: str | None = None) -> Span:
    def found() -> Span | None:
        return next((s for s in received.named(name) if s.trace_id == trace_id and (kind is None or s.kind == kind)
                     and (service is None or s.resource.get("service.name") == service)), None)
    return wait_until(found, 15, f"the span '{name}' of trace {trace_id}")


def _chat(srv: Running, model: str, traceparent: str | None = None, **extra: Any) -> httpx.Response:
    headers = srv.headers() | ({"traceparent": traceparent} if traceparent else {})
    return httpx.post(srv.v1 + "/chat/completions", headers=headers, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def _traceparent_of(headers: dict[str, str]) -> tuple[str, str]:
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled (a trace begun here may also flag its id random)
    return trace_id, span_id


def test_a_retried_call_is_one_trace_continuing_the_clients(traced, stub):
    srv, received = traced
    trace_id, client_span, traceparent = _parent()
    stub.fail_times = 1  # deployment `a` answers 500; the router retries on `b`
    r = _chat(srv, "traced", traceparent)
    assert r.status_code == 200, r.text
    assert r.headers["x-modelyard-deployment"] == "b"

    root = _root(received, "chat traced", trace_id)
    assert root.parent_id == client_span and root.kind == "server"
    assert root.resource["service.name"] == "modelyard-test"
    attrs = root.attributes
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "traced"
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.response.model"] == "traced"
    assert attrs["gen_ai.usage.input_tokens"] == 7
    assert attrs["gen_ai.usage.output_tokens"] == len(stub.reply.split(" "))
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["http.response.status_code"] == 200 and attrs["modelyard.deployment"] == "traced/b"
    assert root.status != 2

    children = received.children(root)
    assert sorted(s.name for s in children) == ["auth", "chat stub-model", "chat stub-model", "gate"]
    first, second = sorted((s for s in children if s.kind == "client"), key=lambda s: s.attributes["modelyard.attempt"])
    assert first.attributes["modelyard.deployment"] == "traced/a" and first.attributes["modelyard.attempt"] == 1
    assert first.attributes["http.response.status_code"] == 500 and first.status == 2
    assert second.attributes["modelyard.deployment"] == "traced/b" and second.attributes["modelyard.attempt"] == 2
    assert second.status != 2 and second.attributes["modelyard.fallback"] is False
    assert second.attributes["gen_ai.request.model"] == "stub-model"

    # each attempt's request carried its own span as the upstream's parent, in the client's trace
    assert [_traceparent_of(h) for h in stub.headers[-2:]] == [(trace_id, first.span_id), (trace_id, second.span_id)]


def test_a_fallback_is_an_attempt_of_its_own_and_a_trace_starts_here_without_a_traceparent(traced, stub):
    srv, received = traced
    r = _chat(srv, "lonely")
    assert r.status_code == 200, r.text
    assert r.headers["x-modelyard-model"] == "traced"
    trace_id, _ = _traceparent_of(stub.headers[-1])  # the trace the server started
    root = _root(received, "chat lonely", trace_id)
    assert root.parent_id == ""
    attempts = sorted((s for s in received.children(root) if s.kind == "client"),
                      key=lambda s: s.attributes["modelyard.attempt"])
    assert [(s.attributes["modelyard.deployment"], s.attributes["modelyard.fallback"]) for s in attempts] == \
        [("lonely/dead", False), ("traced/a", True)]
    assert attempts[0].status == 2 and attempts[0].attributes["error.type"] == "upstream_error"
    assert "http.response.status_code" not in attempts[0].attributes  # no answer: the connection was refused


def test_a_stream_has_its_usage_and_its_attempt_lasts_until_it_ends(traced, stub):
    srv, received = traced
    trace_id, _, traceparent = _parent()
    r = _chat(srv, "traced", traceparent, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and "[DONE]" in r.text
    root = _root(received, "chat traced", trace_id)
    assert root.attributes["gen_ai.usage.output_tokens"] == len(stub.reply.split(" "))
    (attempt,) = [s for s in received.children(root) if s.kind == "client"]
    assert attempt.status != 2 and _traceparent_of(stub.headers[-1]) == (trace_id, attempt.span_id)


def test_a_job_run_continues_the_trace_of_the_request_that_submitted_it(traced, stub):
    srv, received = traced
    trace_id, _, traceparent = _parent()
    r = httpx.post(srv.url + "/api/jobs", headers=srv.headers() | {"traceparent": traceparent}, timeout=30,
                   json={"model_id": "traced", "task": "chat",
                         "payload": {"messages": [{"role": "user", "content": "later"}]}})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    submit = _root(received, "chat traced", trace_id)
    run = _root(received, "job chat traced", trace_id)
    assert run.parent_id == submit.span_id and run.kind == "consumer"
    assert run.attributes["modelyard.job.id"] == job_id and run.attributes["modelyard.job.attempt"] == 1
    (attempt,) = [s for s in received.children(run) if s.kind == "client"]
    assert _traceparent_of(stub.headers[-1]) == (trace_id, attempt.span_id)


def test_an_answer_over_500_and_each_upstream_failure_log_one_line_each(traced, stub, caplog):
    srv, received = traced
    trace_id, _, traceparent = _parent()
    stub.fail_times = 2
    with caplog.at_level(logging.INFO, logger="modelyard"):
        r = _chat(srv, "failing", traceparent)
    assert r.status_code == 502
    failures = [rec for rec in caplog.records if rec.getMessage().startswith("upstream failure")]
    assert len(failures) == 1
    f = failures[0]
    assert (f.model, f.deployment, f.upstream_status, f.attempt) == ("failing", "failing/only", 500, 1)
    answered = [rec for rec in caplog.records if rec.getMessage().startswith("answered 502")]
    assert len(answered) == 1
    a = answered[0]
    assert (a.model, a.deployment, a.upstream_status, a.attempt, a.path) == \
        ("failing", "failing/only", 500, 1, "/v1/chat/completions")
    assert "failing/only" in a.getMessage() and "upstream status 500" in a.getMessage()
    root = _root(received, "chat failing", trace_id)
    assert root.status == 2 and root.attributes["http.response.status_code"] == 502
    assert UPSTREAM_KEY not in caplog.text


def test_tracing_off_sends_no_trace_context_upstream(tmp_path, stub_server, stub):
    settings = make_settings(tmp_path, models=traced_models(stub_server[0].url), tracing="off")
    with running(settings) as srv:
        assert srv.app.tracing is None
        r = _chat(srv, "traced", _parent()[2])
        assert r.status_code == 200
    assert "traceparent" not in stub.headers[-1]


def test_a_request_serving_no_call_is_named_by_its_route_not_its_path(traced):
    srv, received = traced
    trace_id, _, traceparent = _parent()
    headers = srv.headers() | {"traceparent": traceparent}
    assert httpx.get(srv.url + "/api/jobs/job_nosuch", headers=headers).status_code == 404
    span = _root(received, "GET /api/jobs/{job_id}", trace_id)
    assert span.attributes["http.route"] == "/api/jobs/{job_id}"
    assert span.attributes["url.path"] == "/api/jobs/job_nosuch"
    trace_id, _, traceparent = _parent()
    headers = srv.headers() | {"traceparent": traceparent}
    assert httpx.get(srv.url + "/no/such/route", headers=headers).status_code == 404
    assert _root(received, "GET", trace_id).attributes["http.response.status_code"] == 404


@pytest.mark.slow
def test_the_trace_continues_into_a_worker(tmp_path):
    """A real `modelyard worker` with tracing on: its request span is the child of the gateway's attempt span."""
    received = Received()
    with ServerThread(create_receiver(received)) as collector:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        settings = make_settings(tmp_path / "cp", builtin_models=False, worker_heartbeat_seconds=0.5,
                                 worker_timeout_seconds=5.0)
        with pytest.MonkeyPatch.context() as env:
            for name, value in otel.items():
                env.setenv(name, value)
            app = create_app(settings)
        with ServerThread(app) as thread:
            plane = Running(url=thread.url, settings=settings, app=app, thread=thread)
            worker = Worker(tmp_path, plane, token_for(plane, "default", ["worker"]), "traced", models="echo")
            worker.env.update(otel, OTEL_SERVICE_NAME="modelyard-worker")
            worker.start()
            try:
                def hosted() -> bool:
                    r = httpx.get(plane.url + "/api/model-status", headers=plane.headers())
                    return any(m["model_id"] == "echo" for m in r.json()["models"])
                wait_until(hosted, 40, "the worker to announce its model")
                trace_id, _, traceparent = _parent()
                r = _chat(plane, "echo", traceparent)
                assert r.status_code == 200 and r.headers["x-modelyard-deployment"] == "worker:traced", r.text
                root = _root(received, "chat echo", trace_id, service="modelyard", kind="server")
                (attempt,) = [s for s in received.children(root) if s.kind == "client"]
                on_worker = wait_until(lambda: [s for s in received.trace(trace_id)
                                                if s.resource.get("service.name") == "modelyard-worker"
                                                and s.kind == "server"], 20, "the worker's span")
                assert [(s.name, s.parent_id) for s in on_worker] == [("chat echo", attempt.span_id)]
            finally:
                worker.kill()


def test_an_agent_runs_first_nodes_continue_the_trace_of_the_request_that_started_it(traced):
    srv, received = traced
    with httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=30) as http:
        dag = {"nodes": {"a": {"model_id": "traced", "task": "chat",
                               "payload": {"messages": [{"role": "user", "content": "node"}]}}}}
        r = http.post("/api/agents", json={"name": "traced", "dag": dag})
        assert r.status_code == 201, r.text
        trace_id, _, traceparent = _parent()
        r = http.post(f"/api/agents/{r.json()['agent']['id']}/run", json={}, headers={"traceparent": traceparent})
        assert r.status_code == 201, r.text
    node = _root(received, "job chat traced", trace_id)
    assert node.attributes["modelyard.job.executor"] == "agent_node"
    started = next(s for s in received.trace(trace_id) if s.kind == "server")
    assert node.parent_id == started.span_id and started.parent_id == traceparent.split("-")[2]


def test_with_tracing_off_the_sdk_is_never_imported(tmp_path):
    """The server runs without the `otel` extra: nothing imports the SDK unless tracing is on."""
    code = ("import sys; from modelyard.config import Settings; from modelyard.server.app import create_app; "
            "create_app(Settings(data_dir=sys.argv[1], builtin_models=False)); "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MODELYARD_"))}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
