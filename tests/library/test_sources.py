"""Library items from the sources the other library tests leave out: batch lines, the studio, video (the blocking
route and a job) and a real agent run (a task node and a map's items), each checked field by field."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from ..conftest import Running, make_settings, running, server_fixture
from ..support.jobs import FAST, job_models, wait_status
from ..support.library import flush, item_where, items, of_job
from ..support.waiting import wait_until

FLUX = "black-forest-labs/FLUX.1-schnell"
VIDEO = {"size": "64x64", "duration": 1, "fps": 4, "steps": 1}  # the smallest clip the demo pipeline makes


@contextlib.contextmanager
def sources_server(tmp: Path, database_url: str | None, stub_url: str) -> Iterator[Running]:
    models = [*job_models(), {"id": FLUX, "type": "image", "deployments": [{
        "backend": "diffusers", "path": str(tmp / "flux-demo"), "options": {"demo": True, "default_size": "64x64"}}]}]
    extra = {**FAST, "allow_private_urls": True, "studio_models": {"t2i": "demo-image"}}
    with running(make_settings(tmp, database_url=database_url, models=models, **extra)) as s:
        yield s


srv = server_fixture("srv", sources_server)


@pytest.fixture(scope="module")
def http(srv: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=300) as c:
        yield c


def check_item(http: httpx.Client, srv: Running, item: dict[str, Any], *, type: str, model_id: str, task: str,
               prompt: str, route: str, job_id: str | None, run_id: str | None = None,
               size: tuple[int, int] | None = None, media: int = 1) -> None:
    """Every field the issue lists, and that each of its freshly signed links downloads what it says it is."""
    assert (item["type"], item["model_id"], item["task"], item["prompt"]) == (type, model_id, task, prompt), item
    assert item["source"] == {"route": route, "job_id": job_id, "run_id": run_id}, item
    assert item["id"].startswith("lib_") and isinstance(item["created_at"], int) and item["bytes"] > 0
    assert len(item["urls"]) == len(item["media"]) == media, item
    assert item["bytes"] == sum(m["bytes"] for m in item["media"])
    if size is not None:
        assert (item["width"], item["height"]) == size, item
    fresh = http.get(f"/api/library/items/{item['id']}").json()  # signed again on this read
    assert fresh["id"] == item["id"]
    for url, m in zip(fresh["urls"], fresh["media"]):
        assert "expires=" in url and "sig=" in url
        got = httpx.get(url, timeout=60)
        assert got.status_code == 200 and len(got.content) == m["bytes"] > 0
        magic = {"image": got.content[:4] == b"\x89PNG", "video": got.content[4:8] == b"ftyp"}
        assert magic[type], (url, got.content[:16])
        assert got.headers["content-type"] == m["content_type"]


def test_batch_lines_become_items(http: httpx.Client, srv: Running) -> None:
    client = openai.OpenAI(base_url=srv.v1, api_key=srv.admin_key, timeout=120, max_retries=0)
    prompts = ["a batch line's lighthouse", "a batch line's harbour"]
    lines = [{"custom_id": f"l{i}", "method": "POST", "url": "/v1/images/generations",
              "body": {"model": "demo-image", "prompt": p, "size": "64x64", **({"response_format": "b64_json"} if i
                                                                                 else {})}}
             for i, p in enumerate(prompts)]
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    file_id = client.files.create(file=("in.jsonl", data), purpose="batch").id
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/images/generations",  # type: ignore[arg-type]
                                  completion_window="24h")

    def ended() -> Any:
        b = client.batches.retrieve(batch.id)
        return b if b.status in ("completed", "failed", "expired", "cancelled") else None
    done = wait_until(ended, 240, "the batch to end", interval=0.2)
    assert done.status == "completed" and done.request_counts.completed == 2, done
    out = {x["custom_id"]: x for x in map(json.loads, client.files.content(done.output_file_id).text.splitlines())}
    for i, prompt in enumerate(prompts):
        job_id = "job_" + out[f"l{i}"]["id"].removeprefix("batch_req_")  # a line is a job (batches/output.py)
        item = item_where(http, srv, of_job(job_id))
        # the URL line's image is kept where the link points; the b64_json line's bytes are saved by the library
        check_item(http, srv, item, type="image", model_id="demo-image", task="text-to-image", prompt=prompt,
                   route="batch", job_id=job_id, size=(64, 64))
        assert item["params"]["size"] == "64x64"


def test_studio_generation_becomes_an_item(http: httpx.Client, srv: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelyard.protocols import studio

    monkeypatch.setitem(studio.LONG_SIDE, "1k", 64)  # the studio's 1k images, 64 pixels a side on the CPU demo
    r = http.post("/api/v1/generate", json={"mode": "t2i", "positive_prompt": "a studio teapot"})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    done = wait_status(http, f"/api/v1/status/{job_id}", srv.headers(), {"COMPLETED", "FAILED"}, timeout=240)
    assert done["status"] == "COMPLETED", done
    item = item_where(http, srv, of_job(job_id))
    check_item(http, srv, item, type="image", model_id="demo-image", task="text-to-image", prompt="a studio teapot",
               route="studio", job_id=job_id, size=(64, 64), media=4)  # t2i makes four images
    assert item["params"]["n"] == 4 and "positive_prompt" not in item["params"]


def test_videos_from_the_blocking_route_and_a_job_become_items(http: httpx.Client, srv: Running) -> None:
    r = http.post("/v1/videos/generations", json={"model": "demo-video", "prompt": "a blocking wave", **VIDEO})
    assert r.status_code in (200, 202), r.text
    job = http.post("/api/jobs", json={"model_id": "demo-video", "task": "text-to-video",
                                       "payload": {"prompt": "a queued wave", **VIDEO}})
    assert job.status_code == 201, job.text
    for job_id, route, prompt in ((r.json()["id"], "openai", "a blocking wave"),
                                  (job.json()["id"], "jobs", "a queued wave")):
        wait_status(http, f"/api/jobs/{job_id}", srv.headers(), {"completed", "failed", "dead_letter"}, timeout=240)
        item = item_where(http, srv, of_job(job_id), type="video")
        check_item(http, srv, item, type="video", model_id="demo-video", task="text-to-video", prompt=prompt,
                   route=route, job_id=job_id, size=(64, 64))
        assert item["duration_seconds"] == pytest.approx(1, abs=0.3), item
        assert item["params"]["fps"] == 4


def test_an_agent_runs_nodes_and_map_items_become_items_of_the_run(http: httpx.Client, srv: Running) -> None:
    node = {"model_id": FLUX, "task": "text-to-image"}
    dag = {"nodes": {"cover": {**node, "inputs": {"prompt": "${input.cover}"}},
                     "pages": {"type": "map", "items": "${input.pages}", "node": {**node, "payload": {"prompt": "${item}"}}}},
           "edges": []}
    agent = http.post("/api/agents", json={"name": "library sources", "dag": dag})
    assert agent.status_code == 201, agent.text
    run = http.post(f"/api/agents/{agent.json()['agent']['id']}/run", json={"input_params": {
        "cover": "an agent's cover", "pages": ["an agent's first page", "an agent's second page"]}})
    assert run.status_code == 201, run.text
    run_id = run.json()["run"]["id"]

    def ended() -> dict[str, Any] | None:
        body = http.get(f"/api/runs/{run_id}").json()["run"]
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None
    done = wait_until(ended, 240, "the run to end", interval=0.2)
    assert done["status"] == "succeeded", done
    pages = http.get(f"/api/runs/{run_id}/nodes/pages/items").json()["data"]
    job_of = {p["item"]: p["job_id"] for p in pages}
    assert len(job_of) == 2 and all(job_of.values()), pages
    for prompt, job_id in job_of.items():
        item = item_where(http, srv, of_job(job_id))
        check_item(http, srv, item, type="image", model_id=FLUX, task="text-to-image", prompt=prompt, route="agent",
                   job_id=job_id, run_id=run_id, size=(64, 64))

    def three() -> list[dict[str, Any]] | None:
        flush(srv)
        found = [i for i in items(http, srv) if i["source"]["run_id"] == run_id]
        return found if len(found) == 3 else None
    of_run = wait_until(three, 60, "the run's three items", interval=0.2)
    cover = next(i for i in of_run if i["prompt"] == "an agent's cover")
    assert cover["source"]["job_id"] not in job_of.values()
    check_item(http, srv, cover, type="image", model_id=FLUX, task="text-to-image", prompt="an agent's cover",
               route="agent", job_id=cover["source"]["job_id"], run_id=run_id, size=(64, 64))


def test_a_nul_in_an_id_is_the_clients_4xx(http: httpx.Client) -> None:
    """PostgreSQL refuses NUL in text; an id (or token) holding one must still be the client's error, not a 500."""
    item = "/api/library/items/lib_%00x"
    for method, path in (("GET", item), ("DELETE", item), ("POST", item + "/share"), ("GET", item + "/share"),
                         ("DELETE", item + "/share"), ("GET", "/api/shares/%00x"), ("GET", "/api/shares/%00x/media/0"),
                         ("GET", "/api/shares/x%00/media/0?expires=1&sig=%00"),
                         ("GET", "/api/library/items?after=lib_%00x"), ("GET", "/api/search?q=%00&type=library")):
        r = http.request(method, path, json={} if method == "POST" else None)
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
    for body in ({"job_id": "job_\x00x"}, {"url": "http://x/\x00"}, {"url": "http://x", "prompt": "a\x00"}):
        r = http.post("/api/library/items", json=body)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
