"""Batches through the official openai SDK on SQLite and PostgreSQL: a mixed batch ending completed with both files
right, validation failures naming lines, cancel mid-run, expiry, org isolation, the discount, webhooks."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from ..conftest import quiet_server, server_fixture
from ..support.accounts import create_key, create_org, top_up, wallet
from ..support.jobs import FAST, Receiver, job_models
from ..support.servers import ServerThread
from ..support.waiting import wait_until
from ..support.provider_stubs import moderation_stub


def batch_models(moderation_url: str) -> list[dict[str, Any]]:
    return [*job_models(1.0),
            {"id": "echo-embed", "type": "embedding", "deployments": [{"backend": "echo"}]},
            {"id": "echo-priced", "type": "text", "price": {"per_request": 0.02}, "deployments": [{"backend": "echo"}]},
            {"id": "mod", "type": "moderation",
             "deployments": [{"backend": "openai", "base_url": moderation_url + "/v1"}]}]


SETTINGS = {**FAST, "builtin_models": False, "auth_cache_ttl": 0.0, "content_filter_model": "mod",
            "allow_private_urls": True, "batch_concurrency": 4}


@contextlib.contextmanager
def _batch_server(tmp: Path, database_url: str | None, stub_url: str, **extra: Any) -> Iterator[Any]:
    receiver = Receiver()
    with ServerThread(moderation_stub()) as mod, ServerThread(receiver.app()) as hooks:
        with quiet_server(tmp, database_url, batch_models(mod.url), **{**SETTINGS, **extra}) as srv:
            srv.receiver, srv.hook_url = receiver, hooks.url + "/hook"  # type: ignore[attr-defined]
            yield srv


server = server_fixture("server", _batch_server)


def _org(srv: Any, *, cents: int = 1000, block: bool = False, webhook: bool = False) -> tuple[str, openai.OpenAI]:
    org = create_org(srv, "pro")
    top_up(srv, org["id"], cents)
    admin = create_key(srv, org["id"], ["admin:write", "admin:read", "user:read", "user:write"])
    if block:
        r = httpx.post(f"{srv.url}/api/organizations/{org['id']}/content-filter-policy", headers=srv.headers(admin),
                       json={"action": "block"})
        assert r.status_code == 201, r.text
    if webhook:
        r = httpx.patch(f"{srv.url}/api/organizations/{org['id']}", headers=srv.headers(admin),
                        json={"profile": {"webhook_url": srv.hook_url}})
        assert r.status_code == 200, r.text
    return org["id"], openai.OpenAI(api_key=admin, base_url=srv.v1, max_retries=0)


def _event(srv: Any, batch_id: str) -> tuple[dict[str, str], dict[str, Any], bytes]:
    """The webhook the org's endpoint got for this batch (the receiver is shared by the module's tests)."""
    def found() -> Any:
        with srv.receiver.lock:
            for headers, raw in srv.receiver.calls:
                if json.loads(raw)["data"]["id"] == batch_id:
                    return headers, json.loads(raw), raw
        return None
    return wait_until(found, 30, f"the webhook for {batch_id}", interval=0.05)


def _line(custom_id: str, body: dict[str, Any], url: str = "/v1/chat/completions") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def _upload(client: openai.OpenAI, lines: list[Any]) -> str:
    data = b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)
    return client.files.create(file=("input.jsonl", data), purpose="batch").id


def _wait(client: openai.OpenAI, batch_id: str, want: set[str], timeout: float = 60) -> Any:
    seen: list[str] = []

    def reached() -> Any:
        b = client.batches.retrieve(batch_id)
        seen.append(b.status)
        return b if b.status in want else None
    return wait_until(reached, timeout, f"batch {batch_id} to reach {want} (seen {seen[-3:]})", interval=0.1)


def _file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_mixed_batch_completes_with_both_files(server):
    org_id, client = _org(server, block=True, webhook=True)
    before = wallet(server, org_id)
    lines = [_line("ok-1", _chat("echo", "hello one")),
             _line("ok-priced", _chat("echo-priced", "paid words here")),
             _line("wrong-task", _chat("echo-embed", "an embedding model cannot chat")),
             _line("bad-body", {"model": "echo", "messages": "not a list"}),
             _line("blocked", _chat("echo", "something forbidden")),
             _line("ok-2", _chat("echo", "hello two"))]
    input_id = _upload(client, lines)
    batch = client.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"run": "mixed"})
    assert batch.status == "validating" and batch.object == "batch" and batch.metadata == {"run": "mixed"}
    assert batch.endpoint == "/v1/chat/completions" and batch.input_file_id == input_id
    assert batch.expires_at - batch.created_at == 86400
    done = _wait(client, batch.id, {"completed", "failed"})
    assert done.status == "completed", done
    assert done.request_counts.total == 6 and done.request_counts.completed == 3 and done.request_counts.failed == 3
    for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
        assert getattr(done, stamp) is not None, stamp
    assert done.failed_at is None and done.cancelled_at is None and done.model == "echo"
    out, err = _file_lines(client, done.output_file_id), _file_lines(client, done.error_file_id)
    assert [x["custom_id"] for x in out] == ["ok-1", "ok-priced", "ok-2"]
    assert [x["custom_id"] for x in err] == ["wrong-task", "bad-body", "blocked"]
    for x in out:
        assert x["id"].startswith("batch_req_") and x["error"] is None and x["response"]["status_code"] == 200
        body = x["response"]["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"].startswith(
            {"ok-1": "hello one", "ok-priced": "paid", "ok-2": "hello two"}[x["custom_id"]])
    by = {x["custom_id"]: x for x in err}
    assert by["wrong-task"]["response"]["status_code"] == 400
    assert by["wrong-task"]["response"]["body"]["error"]["code"] == "unsupported_task"
    assert by["bad-body"]["response"]["status_code"] == 400
    assert by["bad-body"]["response"]["body"]["error"]["param"] == "body.messages"
    assert by["blocked"]["response"]["status_code"] == 400
    assert by["blocked"]["response"]["body"]["error"]["code"] == "content_filter"
    # usage: echo answers with the user's words, a token per word each way, summed over the completed lines
    words = 2 + 3 + 2
    assert done.usage.input_tokens == words and done.usage.output_tokens == words
    assert done.usage.total_tokens == 2 * words
    files = client.files.retrieve(done.output_file_id)
    assert files.purpose == "batch_output" and files.filename == f"{done.id}_output.jsonl"
    # the priced line costs half its $0.02 list price
    after = wallet(server, org_id)
    assert before["balance_cents"] - after["balance_cents"] == 1, (before, after)
    # the org's webhook endpoint hears batch.completed, signed as job webhooks are
    headers, event, raw = _event(server, done.id)
    assert event["type"] == "batch.completed" and event["data"]["id"] == done.id
    secret = httpx.get(server.url + "/api/webhook-secret", headers={"Authorization": f"Bearer {client.api_key}"}
                       ).json()["secret"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + raw,
                   hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    # a finished batch cannot be cancelled, and stays as it is
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(done.id)
    assert client.batches.retrieve(done.id).status == "completed"


def test_embeddings_batch(server):
    _, client = _org(server)
    lines = [_line(f"e{i}", {"model": "echo-embed", "input": f"text number {i}"}, "/v1/embeddings") for i in range(20)]
    batch = client.batches.create(input_file_id=_upload(client, lines), endpoint="/v1/embeddings",
                                  completion_window="24h")
    done = _wait(client, batch.id, {"completed", "failed"})
    assert done.status == "completed" and done.error_file_id is None
    out = _file_lines(client, done.output_file_id)
    assert [x["custom_id"] for x in out] == [f"e{i}" for i in range(20)]
    assert out[0]["response"]["body"]["data"][0]["object"] == "embedding"
    assert done.usage.input_tokens == 60 and done.usage.output_tokens == 0


def test_validation_failure_names_lines(server):
    _, client = _org(server, webhook=True)
    lines = [_line("a", _chat("echo", "fine")),
             b"{not json",
             _line("a", _chat("echo", "duplicate id")),
             {**_line("c", _chat("echo", "x")), "method": "GET"},
             _line("d", _chat("echo", "x"), url="/v1/embeddings"),
             _line("e", _chat("no-such-model", "x"))]
    batch = client.batches.create(input_file_id=_upload(client, lines), endpoint="/v1/chat/completions",
                                  completion_window="24h")
    failed = _wait(client, batch.id, {"failed", "completed"})
    assert failed.status == "failed" and failed.failed_at is not None and failed.in_progress_at is None
    errors = [(e.line, e.code, e.param) for e in failed.errors.data]
    assert errors == [(2, "invalid_json_line", None), (3, "duplicate_custom_id", "custom_id"),
                      (4, "invalid_method", "method"), (5, "invalid_url", "url"),
                      (6, "model_not_found", "body.model")], errors
    assert failed.output_file_id is None and failed.error_file_id is None
    assert failed.request_counts.total == 0
    assert _event(server, batch.id)[1]["type"] == "batch.failed"


def test_bad_requests_to_create(server):
    _, client = _org(server)
    good = _upload(client, [_line("a", _chat("echo", "x"))])
    with pytest.raises(openai.BadRequestError) as e:
        client.batches.create(input_file_id=good, endpoint="/v1/nope", completion_window="24h")  # type: ignore[arg-type]
    assert e.value.body["param"] == "endpoint"
    with pytest.raises(openai.BadRequestError) as e:
        client.batches.create(input_file_id=good, endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]
    assert e.value.body["param"] == "completion_window"
    with pytest.raises(openai.BadRequestError) as e:
        client.batches.create(input_file_id=good, endpoint="/v1/chat/completions", completion_window="24h",
                              metadata={f"k{i}": "v" for i in range(17)})
    assert e.value.body["param"] == "metadata"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")


def test_cancel_mid_run_keeps_finished_lines(server):
    _, client = _org(server)
    lines = [_line(f"s{i}", _chat("echo-slow", f"slow {i}")) for i in range(12)]  # 1 s each, 4 at a time
    batch = client.batches.create(input_file_id=_upload(client, lines), endpoint="/v1/chat/completions",
                                  completion_window="24h")

    def some_done() -> Any:
        b = client.batches.retrieve(batch.id)
        return b if b.request_counts.completed >= 1 else None
    running = wait_until(some_done, 30, "a first line to finish", interval=0.05)
    assert running.status == "in_progress" and running.request_counts.total == 12
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at is not None
    done = _wait(client, batch.id, {"cancelled"})
    assert done.cancelled_at is not None and done.completed_at is None
    out, err = _file_lines(client, done.output_file_id), _file_lines(client, done.error_file_id)
    ids = [x["custom_id"] for x in out] + [x["custom_id"] for x in err]
    assert sorted(ids) == sorted(f"s{i}" for i in range(12)) and len(ids) == 12  # each line in exactly one file
    assert out and err
    assert all(x["error"]["code"] == "batch_cancelled" and x["response"] is None for x in err)
    assert done.request_counts.completed == len(out) and done.request_counts.failed == len(err)


def test_other_orgs_ids_are_404(server):
    _, mine = _org(server)
    _, theirs = _org(server)
    batch = mine.batches.create(input_file_id=_upload(mine, [_line("a", _chat("echo", "x"))]),
                                endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        theirs.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        theirs.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):  # nor can they run a batch on my file
        theirs.batches.create(input_file_id=batch.input_file_id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert batch.id not in [b.id for b in theirs.batches.list()]
    done = _wait(mine, batch.id, {"completed"})
    with pytest.raises(openai.NotFoundError):
        theirs.files.content(done.output_file_id)
    for prefix in ("/openai/v1", "/api/v1"):
        r = httpx.get(f"{server.url}{prefix}/batches/{batch.id}", headers={"Authorization": f"Bearer {theirs.api_key}"})
        assert r.status_code == 404
        r = httpx.get(f"{server.url}{prefix}/batches/{batch.id}", headers={"Authorization": f"Bearer {mine.api_key}"})
        assert r.status_code == 200 and r.json()["status"] == "completed"


def test_list_pages(server):
    _, client = _org(server)
    file_id = _upload(client, [_line("a", _chat("echo", "x"))])
    made = [client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h").id for _ in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
    rest = client.batches.list(limit=2, after=page.data[-1].id)
    assert [b.id for b in rest.data] == [made[0]] and not rest.has_more
    assert [b.id for b in client.batches.list(limit=2)] == made[::-1]  # the SDK follows the pages


def test_expiry(tmp_path, database_url, stub_server):
    """A window shortened by config: unfinished lines end as batch_expired, finished ones stay in the output."""
    url = None if database_url.startswith("sqlite") else database_url
    with _batch_server(tmp_path, url, stub_server[0].url, batch_window_seconds=2.5) as srv:
        _, client = _org(srv, webhook=True)
        lines = [_line(f"s{i}", _chat("echo-slow", f"slow {i}")) for i in range(16)]
        batch = client.batches.create(input_file_id=_upload(client, lines), endpoint="/v1/chat/completions",
                                      completion_window="24h")
        done = _wait(client, batch.id, {"expired", "completed"})
        assert done.status == "expired" and done.expired_at is not None and done.completed_at is None
        out, err = _file_lines(client, done.output_file_id), _file_lines(client, done.error_file_id)
        assert len(out) + len(err) == 16 and out and err
        assert {x["error"]["code"] for x in err} == {"batch_expired"}
        assert _event(srv, batch.id)[1]["type"] == "batch.expired"


def test_cancel_while_validating_accounts_for_every_line(tmp_path, database_url, stub_server):
    """A gateway that runs no driver keeps the batch validating until it is cancelled; the driver's next pass then
    ends it with every input line in the error file as batch_cancelled, as OpenAI does."""
    url = None if database_url.startswith("sqlite") else database_url
    with _batch_server(tmp_path, url, stub_server[0].url, job_runner=False) as srv:
        _, client = _org(srv)
        lines = [_line(f"v{i}", _chat("echo", f"line {i}")) for i in range(5)]
        batch = client.batches.create(input_file_id=_upload(client, lines), endpoint="/v1/chat/completions",
                                      completion_window="24h")
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        srv.on_server_loop(srv.app.state.ctx.batches.driver.pass_once())  # what a runner's driver does next
        done = client.batches.retrieve(batch.id)
        assert done.status == "cancelled" and done.cancelled_at is not None and done.in_progress_at is None
        assert done.output_file_id is None and done.error_file_id is not None
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 0, 5)
        err = _file_lines(client, done.error_file_id)
        assert [x["custom_id"] for x in err] == [f"v{i}" for i in range(5)]
        assert all(x["response"] is None and x["error"]["code"] == "batch_cancelled" and
                   x["id"].startswith("batch_req_") for x in err)
        assert client.files.retrieve(done.error_file_id).purpose == "batch_output"
