"""Share links (lifecycle, revoke, expiry, keyless reads, rate limit), search on both databases, and render."""

from __future__ import annotations

import itertools
import time
from typing import Any, Iterator

import httpx
import openai
import pytest

from ..conftest import Running, require, server_fixture
from ..support.clock import Clock
from ..support.library import SHARE_RPM, flush, item_where, items, library_server, new_org, of_job

srv = server_fixture("srv", library_server)
IMAGE = {"model": "demo-image", "size": "64x64"}


@pytest.fixture(scope="module")
def http(srv: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def made(srv: Running, http: httpx.Client) -> dict[str, Any]:
    """A few items of the operator's org, by prompt."""
    sdk = openai.OpenAI(base_url=srv.v1, api_key=srv.admin_key, timeout=120, max_retries=0)
    prompts = ["a purple giraffe on the moon", "portrait of an old sailor", "sailors singing at night"]
    for p in prompts:
        sdk.images.generate(prompt=p, **IMAGE)  # type: ignore[arg-type]
    flush(srv)
    return {i["prompt"]: i for i in items(http, srv) if i["prompt"] in prompts}


@pytest.fixture(scope="module")
def hours() -> Iterator[int]:
    return itertools.count(1)


@pytest.fixture
def clock(srv: Running, hours: Iterator[int]) -> Iterator[Clock]:
    """The library's clock, moved by the test (share expiry, the per-address window): each test's starts in an hour
    of the future no other test used, so no rate-limit window carries over."""
    library = srv.app.state.ctx.library
    old, library.clock = library.clock, Clock(now=time.time() + 3600 * (1000 + next(hours)))
    try:
        yield library.clock
    finally:
        library.clock = old


def share(http: httpx.Client, srv: Running, item_id: str, key: str | None = None, **body: Any) -> httpx.Response:
    return http.post(f"/api/library/items/{item_id}/share", json=body, headers=srv.headers(key))


def test_share_lifecycle_and_keyless_fetch(http: httpx.Client, srv: Running, made: dict[str, Any]) -> None:
    item = made["a purple giraffe on the moon"]
    r = share(http, srv, item["id"])
    assert r.status_code == 201, r.text
    link = r.json()
    assert len(link["token"]) >= 43 and link["url"].endswith("/api/shares/" + link["token"])
    assert link["expires_at"] is None
    public = httpx.get(link["url"])  # no key
    assert public.status_code == 200, public.text
    body = public.json()
    assert body["id"] == item["id"] and body["prompt"] == item["prompt"] and "source" not in body
    media = httpx.get(body["urls"][0])
    assert media.status_code == 200 and media.content[:4] == b"\x89PNG"
    current = http.get(f"/api/library/items/{item['id']}/share", headers=srv.headers()).json()
    assert current["item_id"] == item["id"] and "token" not in current
    # a new link replaces the old one
    newer = share(http, srv, item["id"]).json()
    assert httpx.get(link["url"]).status_code == 404 and httpx.get(newer["url"]).status_code == 200
    fresh = httpx.get(newer["url"]).json()["urls"][0]
    assert http.delete(f"/api/library/items/{item['id']}/share", headers=srv.headers()).status_code == 200
    assert httpx.get(newer["url"]).status_code == 404
    assert httpx.get(fresh).status_code == 404  # its media went with it, signed or not
    assert http.get(f"/api/library/items/{item['id']}/share", headers=srv.headers()).status_code == 404
    assert http.delete(f"/api/library/items/{item['id']}/share", headers=srv.headers()).status_code == 404


def test_share_expires(http: httpx.Client, srv: Running, made: dict[str, Any], clock: Clock) -> None:
    link = share(http, srv, made["portrait of an old sailor"]["id"], expires_in_seconds=60).json()
    assert link["expires_at"] == int(clock.now) + 60
    shared = httpx.get(link["url"]).json()
    assert httpx.get(shared["urls"][0]).status_code == 200
    clock.advance(61)
    assert httpx.get(link["url"]).status_code == 404
    assert httpx.get(shared["urls"][0]).status_code == 404
    assert http.get(f"/api/library/items/{link['item_id']}/share", headers=srv.headers()).status_code == 404
    for bad in (0, -5, "soon", True, 10**9):
        r = share(http, srv, link["item_id"], expires_in_seconds=bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == "expires_in_seconds"


def test_shares_are_scoped_private_and_limited(http: httpx.Client, srv: Running, made: dict[str, Any],
                                               clock: Clock) -> None:
    _, key = new_org(srv, prompts_private=True)
    item_id = made["sailors singing at night"]["id"]
    assert share(http, srv, item_id, key).status_code == 404  # another org's item
    assert http.get(f"/api/library/items/{item_id}/share", headers=srv.headers(key)).status_code == 404
    mine = share(http, srv, item_id).json()
    assert http.delete(f"/api/library/items/{item_id}/share", headers=srv.headers(key)).status_code == 404
    sdk = openai.OpenAI(base_url=srv.v1, api_key=key, timeout=120, max_retries=0)
    sdk.images.generate(prompt="a secret recipe", **IMAGE)  # type: ignore[arg-type]
    theirs = item_where(http, srv, lambda i: i["prompt"] == "a secret recipe", key)
    shared = httpx.get(share(http, srv, theirs["id"], key).json()["url"]).json()
    assert "prompt" not in shared and "params" not in shared and shared["model_id"] == "demo-image"
    assert httpx.get(srv.url + "/api/shares/" + "x" * 43).status_code == 404
    # keyless reads are limited per address: this minute (of the moved clock) allows SHARE_RPM of them
    statuses = [httpx.get(mine["url"]).status_code for _ in range(SHARE_RPM + 1)]
    assert statuses[:SHARE_RPM - 3].count(200) == SHARE_RPM - 3 and statuses[-1] == 429
    clock.advance(60)
    assert httpx.get(mine["url"]).status_code == 200


def test_deleting_an_item_ends_its_share(http: httpx.Client, srv: Running) -> None:
    sdk = openai.OpenAI(base_url=srv.v1, api_key=srv.admin_key, timeout=120, max_retries=0)
    sdk.images.generate(prompt="short lived", **IMAGE)  # type: ignore[arg-type]
    flush(srv)
    item = next(i for i in items(http, srv) if i["prompt"] == "short lived")
    url = share(http, srv, item["id"]).json()["url"]
    assert http.delete(f"/api/library/items/{item['id']}", headers=srv.headers()).status_code == 200
    assert httpx.get(url).status_code == 404


# ---------------------------------------------------------------- search

def test_search_finds_library_items_by_prompt_words(http: httpx.Client, srv: Running, made: dict[str, Any]) -> None:
    r = http.get("/api/search", params={"q": "sailor", "type": "library"}, headers=srv.headers())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "fts"
    found = [h["item"]["prompt"] for h in body["data"]]
    assert set(found) == {"portrait of an old sailor", "sailors singing at night"}  # stemmed: sailors ~ sailor
    assert all(h["type"] == "library_item" and "sig=" in h["item"]["urls"][0] for h in body["data"])
    _, other = new_org(srv)
    assert http.get("/api/search", params={"q": "sailor"}, headers=srv.headers(other)).json()["data"] == []
    both = http.get("/api/search", params={"q": "giraffe moon"}, headers=srv.headers()).json()
    assert [h["item"]["prompt"] for h in both["data"]] == ["a purple giraffe on the moon"]


def test_search_models_pages_and_validates(http: httpx.Client, srv: Running, made: dict[str, Any]) -> None:
    models = http.get("/api/search", params={"q": "demo image", "type": "models"}, headers=srv.headers()).json()
    assert models["data"][0] == {**models["data"][0], "type": "model"}
    assert models["data"][0]["model"]["id"] == "demo-image"
    page = http.get("/api/search", params={"q": "sailor", "type": "library", "limit": 1}, headers=srv.headers()).json()
    assert page["has_more"] and len(page["data"]) == 1
    rest = http.get("/api/search", params={"q": "sailor", "type": "library", "limit": 1, "after": page["next_after"]},
                    headers=srv.headers()).json()
    assert len(rest["data"]) == 1 and rest["data"][0]["item"]["id"] != page["data"][0]["item"]["id"]
    for params, param in (({}, "q"), ({"q": "x", "type": "pets"}, "type"), ({"q": "x", "mode": "magic"}, "mode"),
                          ({"q": "x", "after": "abc"}, "after"), ({"q": "x", "limit": "500"}, "limit")):
        r = http.get("/api/search", params=params, headers=srv.headers())
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    odd = http.get("/api/search", params={"q": 'AND "( NEAR* -'}, headers=srv.headers())
    assert odd.status_code == 200  # nothing a client types is an engine syntax error


def test_semantic_search_says_which_mode_ranked(http: httpx.Client, srv: Running, made: dict[str, Any]) -> None:
    library = srv.app.state.ctx.library
    if not srv.on_server_loop(library.embedder.ready()):
        body = http.get("/api/search", params={"q": "ocean", "mode": "semantic"}, headers=srv.headers()).json()
        assert body["mode"] == "fts"  # said, not hidden: the fallback ranked these
        require("the built-in embedding model", "all-minilm-l6-v2 cannot run here (modelyard[local] missing)")

    def embedded() -> bool:
        return srv.on_server_loop(library.embedder.embed_due(), timeout=120) == 0 and not srv.on_server_loop(
            library.repo.due_embeddings(1))
    from ..support.waiting import wait_until

    wait_until(embedded, 120, "prompt embeddings")
    body = http.get("/api/search", params={"q": "a seaman's face", "mode": "semantic", "type": "library"},
                    headers=srv.headers()).json()
    assert body["mode"] == "semantic"
    assert body["data"][0]["item"]["prompt"] == "portrait of an old sailor"


# ---------------------------------------------------------------- render

def test_render_sync_answers_the_item(http: httpx.Client, srv: Running) -> None:
    r = http.post("/api/render", headers=srv.headers(), json={
        "model_id": "demo-image", "task": "text-to-image", "payload": {"prompt": "rendered now", "size": "64x64"}})
    assert r.status_code == 200, r.text
    item = r.json()
    assert item["object"] == "library.item" and item["source"]["route"] == "render"
    assert item["source"]["job_id"] == item["job_id"] and item["prompt"] == "rendered now"
    assert http.get(f"/api/library/items/{item['id']}", headers=srv.headers()).json()["id"] == item["id"]


def test_render_async_and_kept_with_autosave_off(http: httpx.Client, srv: Running) -> None:
    _, key = new_org(srv, library_autosave=False)
    r = http.post("/api/render", headers=srv.headers(key), json={
        "model_id": "demo-image", "task": "text-to-image", "wait_seconds": 0,
        "payload": {"prompt": "rendered later", "size": "64x64"}})
    assert r.status_code == 202, r.text
    assert r.json()["item_id"] is None and r.json()["status"] == "pending"
    item = item_where(http, srv, of_job(r.json()["job_id"]), key)
    assert item["source"]["route"] == "render" and item["prompt"] == "rendered later"


def test_render_validates_as_the_sync_route(http: httpx.Client, srv: Running) -> None:
    h = srv.headers()
    cases = [({"task": "text-to-image", "payload": {}}, "model_id"),
             ({"model_id": "echo", "task": "chat", "payload": {}}, "task"),
             ({"model_id": "demo-image", "task": "text-to-image", "payload": {}}, "payload.prompt"),
             ({"model_id": "demo-image", "task": "text-to-image", "payload": {"prompt": "x", "size": "huge"}},
              "payload.size"),
             ({"model_id": "demo-image", "task": "text-to-image", "payload": {"prompt": "x"}, "wait_seconds": -1},
              "wait_seconds"),
             ({"model_id": "nope", "task": "text-to-image", "payload": {"prompt": "x"}}, "model_id"),
             ({"model_id": "stub-tts", "task": "text-to-image", "payload": {"prompt": "x"}}, "task")]
    for body, param in cases:
        r = http.post("/api/render", json=body, headers=h)
        assert r.status_code in (400, 404) and r.json()["error"]["param"] == param, (body, r.text)
