"""/metrics after real calls: counts that match the calls made, stream timings, refusals by reason, tokens and cost,
no label from a name the catalog does not know, no key or org ids, the GenAI names, and the job plane."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from modelyard.config import PlanConfig

from ..conftest import Running, make_settings, running, server_fixture, upstream_models
from ..support.accounts import create_key, create_org, org_with_key
from ..support.jobs import FAST, job_models, wait_status
from ..support.metrics import label_values, samples, scrape, value
from ..support.waiting import wait_until

ADMIN = "myd_metrics-test-admin-key-0123456789"

PLANS = {"tiny": PlanConfig(limits=[{"scope": "org", "class": "api", "kind": "chat", "window": "minute",
                                     "count": 1}]),
         "roomy": PlanConfig(limits=[])}
PRICED = {"id": "paid-flat", "type": "text", "price": {"per_request": 0.01}}


def models(stub_url: str) -> list[dict[str, Any]]:
    return [*upstream_models(stub_url), *job_models(),
            {**PRICED, "deployments": [{"backend": "openai", "base_url": stub_url + "/v1", "model": "stub-model"}]}]


@contextlib.contextmanager
def _build(tmp: Path, database_url: str | None, stub_url: str, **extra: Any) -> Iterator[Running]:
    settings = make_settings(tmp, database_url=database_url, models=models(stub_url), plans=PLANS,
                             auth_cache_ttl=0.0, cooldown_failures=1_000_000, **{**FAST, **extra})
    with running(settings) as srv:
        yield srv


msrv = server_fixture("msrv", _build)


def _client(srv: Running, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.v1, api_key=key or srv.admin_key, max_retries=0, timeout=30)


def _delta(before: str, after: str, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_counts_timings_and_tokens_match_the_calls(msrv: Running) -> None:
    oa = _client(msrv)
    call = {"dialect": "openai", "model": "stub-gpt", "task": "chat"}
    before = scrape(msrv)
    for _ in range(3):
        oa.chat.completions.create(model="gpt-stub", messages=[{"role": "user", "content": "hi"}])  # an alias
    for _ in range(2):
        words = [c for c in oa.chat.completions.create(model="stub-gpt", stream=True,
                                                         messages=[{"role": "user", "content": "hi"}])]
        assert words
    after = scrape(msrv)
    assert _delta(before, after, "modelyard_requests_total", status_class="2xx", **call) == 5
    assert _delta(before, after, "modelyard_request_duration_seconds_count", **call) == 5
    assert _delta(before, after, "modelyard_gateway_overhead_seconds_count", **call) == 5
    assert value(after, "modelyard_requests_in_flight", **call) == 0
    # time to first token and per output token: streams only
    assert _delta(before, after, "modelyard_time_to_first_token_seconds_count", dialect="openai", model="stub-gpt") == 2
    assert _delta(before, after, "modelyard_time_per_output_token_seconds_count", dialect="openai",
                  model="stub-gpt") == 2
    # the stub reports 7 prompt tokens and one completion token per word for a plain call
    assert _delta(before, after, "modelyard_tokens_total", model="stub-gpt", token_type="input") >= 3 * 7
    assert _delta(before, after, "modelyard_tokens_total", model="stub-gpt", token_type="output") > 0
    assert _delta(before, after, "modelyard_upstream_duration_seconds_count", model="stub-gpt",
                  outcome="success") == 5
    assert _delta(before, after, "modelyard_deployment_requests_total", model="stub-gpt", outcome="success") == 5
    # read from the router's own counts and the upstream histogram: the same numbers, not counted twice
    assert value(after, "modelyard_deployment_in_flight", model="stub-gpt") == 0
    assert _delta(before, after, "modelyard_deployment_latency_seconds_count", model="stub-gpt") == 5
    assert _delta(before, after, "modelyard_deployment_latency_seconds_sum", model="stub-gpt") == pytest.approx(
        _delta(before, after, "modelyard_upstream_duration_seconds_sum", model="stub-gpt", outcome="success"))
    # the buckets are the GenAI conventions'
    buckets = {ls["le"] for n, ls, _ in samples(after) if n == "modelyard_time_to_first_token_seconds_bucket"}
    assert {"0.001", "0.005", "7.5", "10.0", "+Inf"} <= buckets
    # a call's numbers are added up off its request path (Metrics.fold): every ended call is in the first scrape
    # after it, and a second scrape adds nothing
    again = scrape(msrv)
    for name in ("modelyard_requests_total", "modelyard_request_duration_seconds_sum",
                 "modelyard_time_to_first_token_seconds_count", "modelyard_upstream_duration_seconds_count"):
        assert value(again, name, model="stub-gpt") == value(after, name, model="stub-gpt"), name


def test_other_faces_get_their_dialect_label(msrv: Running) -> None:
    before = scrape(msrv)
    r = httpx.post(msrv.url + "/v1/messages", headers={"x-api-key": msrv.admin_key, "anthropic-version": "2023-06-01"},
                   json={"model": "stub-gpt", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    after = scrape(msrv)
    assert _delta(before, after, "modelyard_requests_total", dialect="anthropic", model="stub-gpt",
                  status_class="2xx") == 1


def test_refusals_are_counted_by_reason(msrv: Running) -> None:
    _, tiny = org_with_key(msrv, "tiny")
    _, broke = org_with_key(msrv, "roomy")
    before = scrape(msrv)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(msrv.v1 + "/chat/completions", headers={"Authorization": f"Bearer {tiny}"},
                      json={"model": "stub-gpt", **body}).status_code == 200
    assert httpx.post(msrv.v1 + "/chat/completions", headers={"Authorization": f"Bearer {tiny}"},
                      json={"model": "stub-gpt", **body}).status_code == 429  # the plan's one chat a minute
    assert httpx.post(msrv.v1 + "/chat/completions", headers={"Authorization": f"Bearer {broke}"},
                      json={"model": "paid-flat", **body}).status_code == 402  # an empty wallet
    after = scrape(msrv)
    assert _delta(before, after, "modelyard_refusals_total", model="stub-gpt", reason="rate_limit_requests") == 1
    assert _delta(before, after, "modelyard_refusals_total", model="paid-flat", reason="insufficient_balance") == 1
    assert _delta(before, after, "modelyard_requests_total", model="stub-gpt", status_class="4xx") == 1
    assert _delta(before, after, "modelyard_request_errors_total", model="paid-flat",
                  error_type="InsufficientBalance") == 1
    assert value(after, "modelyard_requests_in_flight", model="paid-flat") == 0


def test_cost_is_counted_for_priced_calls(msrv: Running) -> None:
    org = create_org(msrv, "roomy")
    httpx.post(f"{msrv.url}/api/organizations/{org['id']}/wallet/top-ups", headers=msrv.headers(),
               json={"amount_cents": 100}).raise_for_status()
    key = create_key(msrv, org["id"])
    before = scrape(msrv)
    _client(msrv, key).chat.completions.create(model="paid-flat", messages=[{"role": "user", "content": "hi"}])
    after = scrape(msrv)
    assert _delta(before, after, "modelyard_cost_dollars_total", model="paid-flat") == pytest.approx(0.01)


def test_no_unknown_model_and_no_key_or_org_ids_become_labels(msrv: Running) -> None:
    org_id, key = org_with_key(msrv, "roomy")
    oa = _client(msrv, key)
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="no-such-model-xyz", messages=[{"role": "user", "content": "hi"}])
    oa.chat.completions.create(model="stub-gpt", messages=[{"role": "user", "content": "hi"}])
    text = scrape(msrv)
    catalog = {m.id for m in msrv.app.state.ctx.catalog}
    assert label_values(text, "model") <= catalog | {"unknown"}
    assert "no-such-model-xyz" not in text
    for secret in (org_id, key, key[:12], msrv.admin_key):
        assert secret not in text
    # no org or token id of anyone's (ids are org_<hex> and tok_<hex>)
    assert "tok_" not in text and "org_" not in text, [ln for ln in text.splitlines() if "tok_" in ln or "org_" in ln]


def test_jobs_are_measured_through_the_queue(msrv: Running) -> None:
    before = scrape(msrv)
    with httpx.Client(timeout=30) as c:
        r = c.post(msrv.url + "/api/jobs", headers=msrv.headers(),
                   json={"model_id": "echo", "task": "chat", "payload": {"messages": [{"role": "user", "content": "a b"}]}})
        assert r.status_code in (200, 201, 202), r.text
        wait_status(c, f"{msrv.url}/api/jobs/{r.json()['id']}", msrv.headers(), {"completed"})
    after = scrape(msrv)
    assert _delta(before, after, "modelyard_requests_total", dialect="jobs", model="echo", status_class="2xx") == 1
    assert _delta(before, after, "modelyard_jobs_finished_total", task="chat", status="completed") == 1
    assert _delta(before, after, "modelyard_job_claim_latency_seconds_count", task="chat") >= 1
    assert _delta(before, after, "modelyard_tokens_total", model="echo", token_type="output") == 2
    names = {n for n, _, _ in samples(after)}
    assert {"modelyard_jobs", "modelyard_job_oldest_pending_seconds", "modelyard_db_pool_in_use",
            "modelyard_write_behind_queued", "modelyard_write_behind_flush_seconds_count",
            "modelyard_job_runner_heartbeat_timestamp_seconds", "modelyard_event_loop_tasks"} <= names


def test_the_grafana_dashboard_queries_only_series_we_export(msrv: Running) -> None:
    import json
    import re

    from prometheus_client.parser import text_string_to_metric_families
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana" / "modelyard-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|total|count|sum)$", "", n) for e in exprs for n in re.findall(r"modelyard_[a-z_]+", e)}
    exported = {f.name for f in text_string_to_metric_families(scrape(msrv))}
    assert used and used <= exported, used - exported


def test_otel_names_replace_ours_when_asked(tmp_path: Path, stub_server: Any) -> None:
    with _build(tmp_path, None, stub_server[0].url, metrics_names="otel") as srv:
        oa = _client(srv)
        oa.chat.completions.create(model="stub-gpt", messages=[{"role": "user", "content": "hi"}])
        list(oa.chat.completions.create(model="stub-gpt", stream=True, messages=[{"role": "user", "content": "hi"}]))
        with pytest.raises(openai.APIStatusError):
            oa.chat.completions.create(model="stub-dead", messages=[{"role": "user", "content": "hi"}])
        text = scrape(srv)
    genai = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "stub-gpt", "gen_ai_provider_name": "openai"}
    assert value(text, "gen_ai_server_request_duration_seconds_count", error_type="", **genai) == 2
    assert value(text, "gen_ai_server_time_to_first_token_seconds_count", **genai) == 1
    assert value(text, "gen_ai_server_time_per_output_token_seconds_count", **genai) == 1
    assert value(text, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **genai) == 2
    assert value(text, "gen_ai_server_request_duration_seconds_count", gen_ai_request_model="stub-dead",
                 error_type="UpstreamError") == 1
    names = {n for n, _, _ in samples(text)}
    assert "modelyard_request_duration_seconds_count" not in names and "modelyard_tokens_total" not in names
    assert "modelyard_requests_total" in names  # no convention for these: ours stay


def test_metrics_off_takes_them_away(tmp_path: Path, stub_server: Any) -> None:
    with running(make_settings(tmp_path, models=upstream_models(stub_server[0].url), metrics_enabled=False)) as srv:
        assert srv.app.state.ctx.metrics is None
        _client(srv).chat.completions.create(model="stub-gpt", messages=[{"role": "user", "content": "hi"}])
        assert httpx.get(srv.url + "/metrics", headers=srv.headers()).status_code == 404


def test_two_apps_in_one_process_keep_their_own_counts(tmp_path: Path, stub_server: Any) -> None:
    with running(make_settings(tmp_path / "a", models=upstream_models(stub_server[0].url))) as a, \
            running(make_settings(tmp_path / "b", models=upstream_models(stub_server[0].url))) as b:
        _client(a).chat.completions.create(model="stub-gpt", messages=[{"role": "user", "content": "hi"}])
        assert value(scrape(a), "modelyard_requests_total", model="stub-gpt") == 1
        assert value(scrape(b), "modelyard_requests_total", model="stub-gpt") == 0


# ---------------------------------------------------------------- serve --workers 2

def _served_by(folder: Path) -> dict[str, float]:
    """Calls each worker process counted, read from its own value file (prometheus-client's multiprocess files)."""
    from prometheus_client.multiprocess import MultiProcessCollector
    counts = {}
    for path in folder.glob("counter_*.db"):
        families = MultiProcessCollector.merge([str(path)])
        counts[path.stem] = sum(s.value for f in families for s in f.samples if s.name == "modelyard_requests_total")
    return {pid: n for pid, n in counts.items() if n}


@pytest.mark.slow
def test_workers_2_metrics_are_the_whole_servers(tmp_path: Path) -> None:
    import json

    from ..support.processes import serve, stop
    config = tmp_path / "modelyard.yaml"
    config.write_text(json.dumps({"admin_key": ADMIN, "builtin_models": False, "metrics_public": True,
                                  "models": [{"id": "echo", "type": "text", "deployments": [{"backend": "echo"}]}]}))
    proc, url = serve(tmp_path, "--config", str(config), "--data-dir", str(tmp_path / "data"), "--workers", "2")
    folder = tmp_path / "data" / "run" / "prometheus"
    sent = 0

    def both_served() -> bool:
        nonlocal sent
        for _ in range(10):  # a new connection each: the kernel hands them to either worker
            r = httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30,
                           json={"model": "echo", "messages": [{"role": "user", "content": "one two three"}]})
            assert r.status_code == 200, r.text
            sent += 1
        return len(_served_by(folder)) >= 2

    try:
        wait_until(both_served, 120, "calls to reach both worker processes")
        # each worker copies its numbers into its file once a second: then, whichever worker answers the scrape,
        # the totals are the server's
        wait_until(lambda: value(httpx.get(url + "/metrics", timeout=30).text, "modelyard_requests_total",
                                 model="echo", status_class="2xx") == sent, 30, "both workers' counts in a scrape")
        for _ in range(3):
            text = httpx.get(url + "/metrics", timeout=30).text
            assert value(text, "modelyard_requests_total", model="echo", status_class="2xx") == sent
            assert value(text, "modelyard_deployment_requests_total", model="echo", outcome="success") == sent
            assert value(text, "modelyard_tokens_total", model="echo", token_type="output") == 3 * sent
            assert value(text, "modelyard_request_duration_seconds_count", model="echo") == sent
            assert value(text, "modelyard_requests_in_flight", model="echo") == 0
    finally:
        stop(proc)
