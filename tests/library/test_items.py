"""Library items over HTTP and the openai SDK: one from each source, explicit saves, autosave off, deletion."""

from __future__ import annotations

from typing import Iterator

import httpx
import openai
import pytest

from ..conftest import Running, server_fixture
from ..support.jobs import wait_status
from ..support.library import flush, item_where, items, library_server, new_org, of_job

srv = server_fixture("srv", library_server)
IMAGE = {"model": "demo-image", "size": "64x64"}


@pytest.fixture(scope="module")
def http(srv: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def sdk(srv: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.v1, api_key=srv.admin_key, timeout=120, max_retries=0)


def test_sync_image_url_becomes_an_item_with_fresh_urls(http: httpx.Client, srv: Running, sdk: openai.OpenAI) -> None:
    resp = sdk.images.generate(prompt="a lighthouse at dusk", **IMAGE)  # type: ignore[arg-type]
    flush(srv)
    item = next(i for i in items(http, srv) if i["prompt"] == "a lighthouse at dusk")
    assert item["type"] == "image" and item["model_id"] == "demo-image" and item["task"] == "text-to-image"
    assert item["source"] == {"route": "openai", "job_id": None, "run_id": None}
    assert item["width"] == 64 and item["height"] == 64 and item["bytes"] > 0
    assert item["params"]["size"] == "64x64" and "prompt" not in item["params"]
    one = http.get(f"/api/library/items/{item['id']}", headers=srv.headers()).json()
    assert one["id"] == item["id"] and "sig=" in one["urls"][0]
    assert http.get(one["urls"][0].replace(srv.url, "")).content[:4] == b"\x89PNG"
    assert resp.data[0].url is not None


def test_inline_results_are_saved_too(http: httpx.Client, srv: Running, sdk: openai.OpenAI) -> None:
    """b64_json images and speech are answered inline; the library keeps its own copy."""
    sdk.images.generate(prompt="an inline orange", response_format="b64_json", **IMAGE)  # type: ignore[arg-type]
    speech = sdk.audio.speech.create(model="stub-tts", voice="alloy", input="read this aloud", response_format="wav")
    assert speech.content.startswith(b"RIFF")
    image = item_where(http, srv, lambda i: i["prompt"] == "an inline orange")
    assert image["bytes"] > 0 and image["type"] == "image" and (image["width"], image["height"]) == (64, 64)
    audio = item_where(http, srv, lambda i: i["prompt"] == "read this aloud", type="audio")
    assert audio["task"] == "speech" and audio["model_id"] == "stub-tts" and audio["params"]["voice"] == "alloy"
    assert http.get(audio["urls"][0].replace(srv.url, "")).content == speech.content


def test_jobs_fal_and_async_openai_become_items(http: httpx.Client, srv: Running) -> None:
    job = http.post("/api/jobs", headers=srv.headers(), json={
        "model_id": "demo-image", "task": "text-to-image", "payload": {"prompt": "job made this", "size": "64x64"}})
    assert job.status_code == 201, job.text
    fal = http.post("/fal/fal-ai/demo", headers=srv.headers(), json={"prompt": "fal made this", "image_size": {"width": 64, "height": 64}})
    assert fal.status_code == 200, fal.text
    queued = http.post("/v1/images/generations", headers=srv.headers(),
                       json={"prompt": "async openai made this", "async": True, **IMAGE})
    assert queued.status_code == 202, queued.text
    for job_id, route, prompt in ((job.json()["id"], "jobs", "job made this"),
                                  (fal.json()["request_id"], "fal", "fal made this"),
                                  (queued.json()["id"], "openai", "async openai made this")):
        item = item_where(http, srv, of_job(job_id))
        assert item["source"]["route"] == route and item["prompt"] == prompt and item["type"] == "image"
        assert item["urls"] and item["source"]["run_id"] is None


def test_agent_node_jobs_carry_their_run(http: httpx.Client, srv: Running) -> None:
    """An agent node is a job whose meta names its run; the item says so."""
    from modelyard.pipeline.auth import Principal

    ctx = srv.app.state.ctx
    me = http.get("/api/v1/me", headers=srv.headers()).json()
    principal = Principal(token_id="tok_agent", org_id=me["organization_id"], org_name="default", plan="unlimited",
                          scopes=frozenset({"user:read", "user:write"}), expires_at=None)
    model = ctx.catalog.get("demo-image")
    from modelyard.types import Task

    job = srv.on_server_loop(ctx.jobs.submit(principal, model, Task.TEXT_TO_IMAGE, {"prompt": "node art", "size": "64x64"},
                                             face="agents", base_url=srv.url, extra_meta={"run_id": "run_abc"}))
    item = item_where(http, srv, of_job(job.id))
    assert item["source"] == {"route": "agent", "job_id": job.id, "run_id": "run_abc"}


def test_autosave_off_keeps_only_explicit_saves(http: httpx.Client, srv: Running) -> None:
    org_id, key = new_org(srv, library_autosave=False)
    sdk = openai.OpenAI(base_url=srv.v1, api_key=key, timeout=120, max_retries=0)
    made = sdk.images.generate(prompt="not kept", **IMAGE)  # type: ignore[arg-type]
    job = http.post("/api/jobs", headers=srv.headers(key), json={
        "model_id": "demo-image", "task": "text-to-image", "payload": {"prompt": "kept later", "size": "64x64"}}).json()
    wait_status(http, f"/api/jobs/{job['id']}", srv.headers(key), {"completed"})
    flush(srv)
    assert items(http, srv, key) == []
    org = http.get(f"/api/organizations/{org_id}", headers=srv.headers()).json()
    assert org["library_autosave"] is False and org["prompts_private"] is False
    # an explicit save of the job (twice: the same item) and of a media link we signed
    saved = http.post("/api/library/items", json={"job_id": job["id"]}, headers=srv.headers(key))
    assert saved.status_code == 201, saved.text
    again = http.post("/api/library/items", json={"job_id": job["id"]}, headers=srv.headers(key))
    assert again.status_code == 200 and again.json()["id"] == saved.json()["id"]
    assert saved.json()["prompt"] == "kept later" and saved.json()["source"]["job_id"] == job["id"]
    by_url = http.post("/api/library/items", json={"url": made.data[0].url, "prompt": "not kept"},
                       headers=srv.headers(key))
    assert by_url.status_code == 201, by_url.text
    assert by_url.json()["source"]["route"] == "save" and by_url.json()["bytes"] > 0
    assert {i["id"] for i in items(http, srv, key)} == {saved.json()["id"], by_url.json()["id"]}


def test_save_rejects_what_it_cannot_keep(http: httpx.Client, srv: Running) -> None:
    h = srv.headers()
    cases = [({}, "url"), ({"url": "x", "job_id": "y"}, "job_id"), ({"job_id": 5}, "job_id"),
             ({"url": srv.url + "/media/img_000000000000000000000000.png?expires=1&sig=00"}, "url")]
    for body, param in cases:
        r = http.post("/api/library/items", json=body, headers=h)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
    assert http.post("/api/library/items", json={"job_id": "job_nope"}, headers=h).status_code == 404
    chat = http.post("/api/jobs", headers=h, json={"model_id": "echo", "task": "chat",
                                                   "payload": {"messages": [{"role": "user", "content": "hi"}]}})
    wait_status(http, f"/api/jobs/{chat.json()['id']}", h, {"completed"})
    r = http.post("/api/library/items", json={"job_id": chat.json()["id"]}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_media"


def test_list_filters_and_pages(http: httpx.Client, srv: Running, sdk: openai.OpenAI) -> None:
    for word in ("alpha", "beta", "gamma"):
        sdk.images.generate(prompt=f"paging {word} zebra", **IMAGE)  # type: ignore[arg-type]
    flush(srv)
    page = http.get("/api/library/items", params={"q": "zebra", "limit": 2}, headers=srv.headers()).json()
    assert [i["prompt"] for i in page["data"]] == ["paging gamma zebra", "paging beta zebra"] and page["has_more"]
    rest = http.get("/api/library/items", params={"q": "zebra", "limit": 2, "after": page["last_id"]},
                    headers=srv.headers()).json()
    assert [i["prompt"] for i in rest["data"]] == ["paging alpha zebra"] and not rest["has_more"]
    assert items(http, srv, type="video", q="zebra") == []
    assert len(items(http, srv, model="demo-image", q="zebra", since="2000-01-01")) == 3
    assert items(http, srv, q="zebra", until="2000-01-01") == []
    for params, param in (({"type": "gif"}, "type"), ({"limit": "0"}, "limit"), ({"since": "soon"}, "since"),
                          ({"after": "lib_nope"}, "after")):
        r = http.get("/api/library/items", params=params, headers=srv.headers())
        assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_delete_removes_bytes_and_other_orgs_see_nothing(http: httpx.Client, srv: Running,
                                                         sdk: openai.OpenAI) -> None:
    sdk.images.generate(prompt="to be deleted", **IMAGE)  # type: ignore[arg-type]
    flush(srv)
    item = next(i for i in items(http, srv) if i["prompt"] == "to be deleted")
    _, other = new_org(srv)
    oh = srv.headers(other)
    assert http.get(f"/api/library/items/{item['id']}", headers=oh).status_code == 404
    assert http.delete(f"/api/library/items/{item['id']}", headers=oh).status_code == 404
    assert all(i["id"] != item["id"] for i in items(http, srv, other))
    gone = http.delete(f"/api/library/items/{item['id']}", headers=srv.headers())
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert http.get(f"/api/library/items/{item['id']}", headers=srv.headers()).status_code == 404
    assert http.get(item["urls"][0].replace(srv.url, "")).status_code == 404  # the bytes went with it


def test_routes_need_a_key(http: httpx.Client) -> None:
    assert http.get("/api/library/items").status_code == 401
    assert http.post("/api/render", json={}).status_code == 401
    assert http.get("/api/search", params={"q": "x"}).status_code == 401
