"""Agents over HTTP: the documents' examples, a chain on the built-in models, validation, tolerance, cancel, repair,
the event stream, cache, cost and org isolation (SQLite + PostgreSQL)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from ..conftest import Running, make_settings, running, server_fixture
from ..support.accounts import create_key, create_org, top_up, wallet
from ..support.jobs import FAST, Receiver, job_models
from ..support.servers import ServerThread
from ..support.waiting import wait_until

FLUX = "black-forest-labs/FLUX.1-schnell"
FINAL = {"succeeded", "failed", "cancelled"}


@contextlib.contextmanager
def agents_server(tmp: Path, database_url: str | None, stub_url: str) -> Iterator[Running]:
    models = job_models(delay=1.5) + [
        # the documents' model id, served by the built-in demo image pipeline
        {"id": FLUX, "type": "image", "deployments": [{"backend": "diffusers", "path": str(tmp / "flux-demo"),
                                                       "options": {"demo": True, "default_size": "64x64"}}]},
        {"id": "echo-priced", "type": "text", "price": {"per_request": 0.01}, "deployments": [{"backend": "echo"}]},
    ]
    with running(make_settings(tmp, database_url=database_url, models=models, allow_private_urls=True,
                               **FAST)) as s:
        yield s


srv = server_fixture("srv", agents_server)


@pytest.fixture(scope="module")
def http(srv: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=60) as c:
        yield c


def chat(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def create(http: httpx.Client, dag: dict[str, Any], name: str = "t", **headers: str) -> dict[str, Any]:
    r = http.post("/api/agents", json={"name": name, "dag": dag}, headers=headers or None)
    assert r.status_code == 201, r.text
    return r.json()["agent"]


def start(http: httpx.Client, agent_id: str, inputs: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    r = http.post(f"/api/agents/{agent_id}/run", json={"input_params": inputs or {}, **extra})
    assert r.status_code == 201, r.text
    return r.json()["run"]


def finished(http: httpx.Client, run_id: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = http.get(f"/api/runs/{run_id}").json()["run"]
        return run if run["status"] in FINAL else None
    return wait_until(done, timeout, f"run {run_id} to end", interval=0.1)


def jobs_of(srv: Running, run_id: str) -> list[Any]:
    from sqlalchemy import select

    from modelyard.store.tables import jobs

    async def go() -> list[Any]:
        async with srv.app.state.ctx.store.engine.connect() as conn:
            return list((await conn.execute(select(jobs.c.id, jobs.c.run_node, jobs.c.run_item, jobs.c.status,
                                                   jobs.c.attempts).where(jobs.c.run_id == run_id))).all())
    return srv.on_server_loop(go())


# ---------------------------------------------------------------- the documents' examples

def test_document_single_node_image_generator(http: httpx.Client, srv: Running) -> None:
    agent = create(http, {"nodes": {"gen": {"model_id": FLUX, "task": "fal/text-to-image",
                                            "inputs": {"prompt": "${input.prompt}"}, "outputs": ["images[0].url"]}},
                          "edges": []}, name="Image Generator")
    assert agent["version"] == 1 and agent["id"].startswith("agent_")
    r = http.post(f"/api/agents/{agent['id']}/run", json={"input_params": {"prompt": "a sunset over the ocean"}})
    assert r.status_code == 201, r.text
    run = r.json()["run"]
    assert run["status"] == "pending" and run["agent_id"] == agent["id"] and run["agent_version"] == 1
    assert run["input_params"] == {"prompt": "a sunset over the ocean"} and isinstance(run["created_at"], int)
    done = finished(http, run["id"])
    assert done["status"] == "succeeded", done
    url = done["outputs"]["gen"]["images[0].url"]
    png = httpx.get(url, timeout=30)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    node = done["nodes"]["gen"]
    assert node["state"] == "succeeded" and node["attempts"] == 1 and node["inputs"] == {"prompt":
                                                                                       "a sunset over the ocean"}
    assert node["result"] == {"images[0].url": node["result"]["images[0].url"]}
    assert done["usage"]["calls"] == 1 and done["usage"]["units"].get("images") == 1


def test_document_batch_map_over_three_prompts(http: httpx.Client, srv: Running) -> None:
    agent = create(http, {"nodes": {"generate": {"type": "map", "items": "${input.prompts}", "node": {
        "model_id": FLUX, "task": "fal/text-to-image", "payload": {"prompt": "${item}"}}, "tolerance": 0}},
        "edges": []}, name="Batch Image Generator")
    prompts = ["a neon cityscape at night", "a watercolor forest in autumn", "a pencil sketch of a mountain lake"]
    done = finished(http, start(http, agent["id"], {"prompts": prompts})["id"])
    assert done["status"] == "succeeded", done
    node = done["nodes"]["generate"]
    assert node["progress"] == {"done": 3, "failed": 0, "total": 3} and node["errors"] == []
    items = done["outputs"]["generate"]["items"]
    assert len(items) == 3 and all(i["images"][0]["url"].startswith("http") for i in items)
    # each item ran its own prompt, in item order
    jobs = sorted(jobs_of(srv, done["id"]), key=lambda j: j.run_item)
    assert [j.run_item for j in jobs] == [0, 1, 2] and all(j.status == "completed" for j in jobs)


def test_three_stage_chain_on_builtin_models(http: httpx.Client, srv: Running) -> None:
    """text-to-image -> image-to-video, and a map of chat calls that a chat node summarises with $each."""
    agent = create(http, {"nodes": {
        "still": {"model_id": "demo-image", "task": "text-to-image",
                  "payload": {"prompt": "${input.subject}", "size": "64x64"}},
        "clip": {"model_id": "demo-video", "task": "image-to-video",
                 "payload": {"prompt": "${input.subject}, slow pan", "image_url": "${nodes.still.result.images[0].url}",
                             "seconds": 1}},
        "captions": {"type": "map", "items": "${input.angles}", "max_concurrency": 2, "node": {
            "model_id": "echo", "task": "openai/chat-completion",
            "payload": {"messages": [{"role": "user", "content": "${input.subject} from ${item}"}]}}},
        "summary": {"model_id": "smollm2", "task": "chat", "outputs": ["choices[0].message.content"], "payload": {
            "max_tokens": 8, "temperature": 0, "messages": [
                {"role": "system", "content": "Summarize the following items."},
                {"$each": "${nodes.captions.result.items}",
                 "template": {"role": "user", "content": "Item: ${item.choices[0].message.content}"}}]}}},
        "edges": [["clip", "summary"]]})
    done = finished(http, start(http, agent["id"], {"subject": "a red fox",
                                                    "angles": ["the left", "above", "the right"]})["id"], 300)
    assert done["status"] == "succeeded", json.dumps(done)[:2000]
    nodes = done["nodes"]
    video = nodes["clip"]["result"]["video"]
    assert video["content_type"] == "video/mp4" and httpx.get(video["url"], timeout=30).status_code == 200
    assert nodes["summary"]["inputs"]["messages"][1:] == [
        {"role": "user", "content": f"Item: a red fox from {a}"} for a in ("the left", "above", "the right")]
    assert isinstance(done["outputs"]["summary"]["choices[0].message.content"], str)
    assert set(done["outputs"]) == {"summary"}  # the only sink (clip -> summary is an explicit edge)
    assert nodes["summary"]["started_at"] >= nodes["clip"]["finished_at"]


# ---------------------------------------------------------------- validation

BAD_DAGS = [
    ("duplicate_id", '{"name": "d", "dag": {"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": '
                     '{"messages": [{"role": "user", "content": "x"}]}}, "a": {"model_id": "echo", "task": "chat"}}}}',
     "a", "dag.nodes.a"),
]


@pytest.mark.parametrize("code, raw, node, path", BAD_DAGS)
def test_duplicate_ids_are_refused(http: httpx.Client, code: str, raw: str, node: str, path: str) -> None:
    r = http.post("/api/agents", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert any(p["code"] == code and p["path"] == path for p in r.json()["node_errors"][node])


@pytest.mark.parametrize("dag, node, code, path", [
    ({"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("${nodes.ghost.result}")}}},
     "a", "unknown_node", "dag.nodes.a.payload.messages[0].content"),
    ({"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("${inputs.x}")}}},
     "a", "invalid_template", "dag.nodes.a.payload.messages[0].content"),
    ({"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("${nodes.b.result}")},
                "b": {"model_id": "echo", "task": "chat", "payload": chat("${nodes.a.result}")}}},
     "a", "cycle", "dag.nodes.a"),
    ({"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("${item}")}}},
     "a", "item_outside_map", "dag.nodes.a.payload.messages[0].content"),
    ({"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": {"messages": [
        {"$each": "just text", "template": {"role": "user", "content": "${item}"}}]}}}},
     "a", "not_an_array", "dag.nodes.a.payload.messages[0].$each"),
    ({"nodes": {"m": {"type": "map", "items": "prompts", "node": {"model_id": "echo", "task": "chat",
                                                                  "payload": chat("${item}")}}}},
     "m", "not_an_array", "dag.nodes.m.items"),
    ({"nodes": {"a": {"model_id": "no-such-model", "task": "chat", "payload": chat("x")}}},
     "a", "unknown_model", "dag.nodes.a.model_id"),
    ({"nodes": {"a": {"model_id": "echo", "task": "text-to-image", "payload": {"prompt": "x"}}}},
     "a", "unsupported_task", "dag.nodes.a.task"),
    ({"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": {"messages": [], "temperature": 7}}}},
     "a", "invalid_payload", "dag.nodes.a.payload.temperature"),
    ({"nodes": {"a": {"model_id": FLUX, "task": "text-to-image", "payload": {"prompt": "x", "n": 0}}}},
     "a", "invalid_payload", "dag.nodes.a.payload.n"),
    ({"nodes": {"m": {"type": "map", "items": "${input.p}", "tolerance": 1.5,
                      "node": {"model_id": "echo", "task": "chat", "payload": chat("${item}")}}}},
     "m", "invalid_value", "dag.nodes.m.tolerance"),
    ({"nodes": {"m": {"type": "map", "items": "${input.p}", "max_concurrency": 0,
                      "node": {"model_id": "echo", "task": "chat", "payload": chat("${item}")}}}},
     "m", "invalid_value", "dag.nodes.m.max_concurrency"),
    ({"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("x")}}, "edges": [["a", "zz"]]},
     "a", "unknown_node", "dag.edges[0]"),
    ({"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("x")}}, "layout": {"zz": {"x": 0, "y": 0}}},
     "_graph", "unknown_node", "dag.layout.zz"),
    ({"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("x")}}, "layout": {"a": {"x": "left"}}},
     "a", "invalid_type", "dag.layout.a"),
    ({"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("x")}}, "layout": [1, 2]},
     "_graph", "invalid_type", "dag.layout"),
])
def test_each_rule_names_the_node_and_path(http: httpx.Client, dag: dict[str, Any], node: str, code: str,
                                           path: str) -> None:
    for url in ("/api/agents", "/api/agents/validate"):
        r = http.post(url, json={"name": "bad", "dag": dag})
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["error"]["code"] == "invalid_agent" and body["error"]["param"]
        problems = body["node_errors"][node]
        assert any(p["code"] == code and p["path"] == path for p in problems), problems


def test_every_problem_is_reported_at_once_and_nothing_is_saved(http: httpx.Client) -> None:
    before = http.get("/api/agents", params={"limit": 100}).json()["data"]
    dag = {"nodes": {"a": {"model_id": "nope", "task": "chat", "payload": chat("${item}")},
                     "m": {"type": "map", "items": "${input.p}", "tolerance": -1, "max_concurrency": 0,
                           "node": {"model_id": "echo", "task": "chat", "payload": chat("${item}")}}}}
    r = http.post("/api/agents", json={"name": "many", "dag": dag})
    assert r.status_code == 400
    errs = r.json()["node_errors"]
    assert {p["code"] for p in errs["a"]} == {"item_outside_map", "unknown_model"}
    assert {p["code"] for p in errs["m"]} == {"invalid_value"} and len(errs["m"]) == 2
    assert http.get("/api/agents", params={"limit": 100}).json()["data"] == before


def test_run_time_validation_missing_inputs_and_non_array(http: httpx.Client, srv: Running) -> None:
    agent = create(http, {"nodes": {
        "a": {"model_id": "echo", "task": "chat", "payload": chat("${input.text}")},
        "m": {"type": "map", "items": "${input.list}", "node": {"model_id": "echo", "task": "chat",
                                                                 "payload": chat("${item}")}},
        "i": {"model_id": FLUX, "task": "text-to-image", "payload": {"prompt": "x", "n": "${input.n}"}}}})
    r = http.post(f"/api/agents/{agent['id']}/run", json={"input_params": {"list": "not a list", "n": 99}})
    assert r.status_code == 400, r.text
    errs = r.json()["node_errors"]
    assert errs["a"][0]["code"] == "missing_input" and errs["a"][0]["path"] == "dag.nodes.a.payload.messages[0].content"
    assert errs["m"][0]["code"] == "not_an_array"
    assert errs["i"][0]["code"] == "invalid_payload" and errs["i"][0]["path"] == "dag.nodes.i.payload.n"
    assert http.get("/api/runs", params={"agent_id": agent["id"]}).json()["data"] == []  # nothing started


def test_schema_is_served_and_validate_describes_the_graph(http: httpx.Client) -> None:
    schema = http.get("/api/agents/schema").json()
    assert schema["title"] == "Agent" and "dag" in schema["properties"]
    r = http.post("/api/agents/validate", json={"dag": {"nodes": {
        "a": {"model_id": "echo", "task": "chat", "payload": chat("${input.q}")},
        "b": {"model_id": "echo", "task": "chat", "payload": chat("${nodes.a.result.id}")}}}})
    assert r.status_code == 200, r.text
    assert r.json() == {"valid": True, "order": ["a", "b"], "sinks": ["b"], "inputs": ["q"], "edges": [["a", "b"]]}


def test_layout_keeps_where_an_editor_drew_the_nodes(http: httpx.Client) -> None:
    """`dag.layout` is saved and read back as it was sent; moving a node is a change (a new version); runs ignore
    it."""
    schema = http.get("/api/agents/schema").json()
    assert "layout" in schema["properties"]["dag"]["properties"]
    dag = {"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("laid out")}},
           "layout": {"a": {"x": 40, "y": 60.5}}}
    agent = create(http, dag)
    assert http.get(f"/api/agents/{agent['id']}").json()["agent"]["dag"]["layout"] == {"a": {"x": 40, "y": 60.5}}
    moved = http.patch(f"/api/agents/{agent['id']}", json={"dag": {**dag, "layout": {"a": {"x": 300, "y": 60}}}})
    assert moved.status_code == 200 and moved.json()["agent"]["version"] == 2
    assert moved.json()["agent"]["dag"]["layout"] == {"a": {"x": 300, "y": 60}}
    done = finished(http, start(http, agent["id"])["id"])
    assert done["status"] == "succeeded" and done["outputs"]["a"]["choices"][0]["message"]["content"] == "laid out"


# ---------------------------------------------------------------- runs

def test_tolerance_one_of_four_fails(http: httpx.Client, srv: Running) -> None:
    """Item 2's size is not a size: that item fails; 0.25 tolerates it, 0 does not."""
    def agent(tol: float) -> dict[str, Any]:
        return create(http, {"nodes": {"m": {"type": "map", "items": "${input.sizes}", "tolerance": tol,
                                              "max_concurrency": 1, "node": {
                                                  "model_id": "echo", "task": "chat",
                                                  "payload": {"messages": [{"role": "user", "content": "${item}"}]}}}}})
    sizes = ["one", "two", {"not": "text"}, "four"]
    ok = finished(http, start(http, agent(0.25)["id"], {"sizes": sizes})["id"])
    assert ok["status"] == "succeeded", ok
    items = ok["outputs"]["m"]["items"]
    assert [i and i["choices"][0]["message"]["content"] for i in items] == ["one", "two", None, "four"]
    assert [e["index"] for e in ok["outputs"]["m"]["errors"]] == [2]
    assert ok["outputs"]["m"]["errors"][0]["error"]["param"].startswith("dag.nodes.m.node.payload.messages[0]")
    page = http.get(f"/api/runs/{ok['id']}/nodes/m/items", params={"limit": 3}).json()
    assert [i["state"] for i in page["data"]] == ["succeeded", "succeeded", "failed"]
    assert page["total"] == 4 and page["has_more"] and page["data"][2]["item"] == {"not": "text"}
    assert page["data"][2]["error"]["param"].startswith("dag.nodes.m.node.payload")
    last = http.get(f"/api/runs/{ok['id']}/nodes/m/items", params={"after": page["next_after"]}).json()
    assert [(i["index"], i["result"]["choices"][0]["message"]["content"]) for i in last["data"]] == [(3, "four")]
    assert http.get(f"/api/runs/{ok['id']}/nodes/nope/items").status_code == 404
    bad = finished(http, start(http, agent(0)["id"], {"sizes": sizes})["id"])
    assert bad["status"] == "failed" and bad["nodes"]["m"]["state"] == "failed"
    assert bad["nodes"]["m"]["error"]["code"] == "tolerance_exceeded"
    # it stopped early: with one item at a time, item 3 never started
    assert sorted(j.run_item for j in jobs_of(srv, bad["id"])) == [0, 1, 2]


def test_versions_pin_runs(http: httpx.Client) -> None:
    agent = create(http, {"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("v1")}}})
    first = start(http, agent["id"])
    r = http.patch(f"/api/agents/{agent['id']}", json={"dag": {"nodes": {"a": {"model_id": "echo", "task": "chat",
                                                                                "payload": chat("v2")}}}})
    assert r.status_code == 200 and r.json()["agent"]["version"] == 2
    second = start(http, agent["id"])
    assert second["agent_version"] == 2
    a, b = finished(http, first["id"]), finished(http, second["id"])
    assert a["agent_version"] == 1 and a["outputs"]["a"]["choices"][0]["message"]["content"] == "v1"
    assert b["outputs"]["a"]["choices"][0]["message"]["content"] == "v2"
    assert http.patch(f"/api/agents/{agent['id']}", json={"name": ""}).status_code == 400
    assert http.delete(f"/api/agents/{agent['id']}").status_code == 200
    assert http.get(f"/api/agents/{agent['id']}").status_code == 404
    assert http.get(f"/api/runs/{a['id']}").json()["run"]["status"] == "succeeded"  # runs outlive their agent


def test_idempotency_key_returns_the_same_run(http: httpx.Client) -> None:
    agent = create(http, {"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("once")}}})
    h = {"Idempotency-Key": "k-" + agent["id"]}
    r1 = http.post(f"/api/agents/{agent['id']}/run", json={}, headers=h)
    r2 = http.post(f"/api/agents/{agent['id']}/run", json={}, headers=h)
    assert r1.status_code == 201 and r2.status_code == 200 and r2.headers["idempotent-replayed"] == "true"
    assert r1.json()["run"]["id"] == r2.json()["run"]["id"]
    assert len(http.get("/api/runs", params={"agent_id": agent["id"]}).json()["data"]) == 1


def test_cancel_drops_queued_and_stops_running(http: httpx.Client, srv: Running) -> None:
    agent = create(http, {"nodes": {
        "slow": {"model_id": "echo-slow", "task": "chat", "payload": chat("slow")},
        "after": {"model_id": "echo", "task": "chat", "payload": chat("${nodes.slow.result.id}")},
        "m": {"type": "map", "items": "${input.xs}", "max_concurrency": 1,
              "node": {"model_id": "echo-slow", "task": "chat", "payload": chat("${item}")}}}})
    run = start(http, agent["id"], {"xs": ["a", "b", "c"]})
    wait_until(lambda: http.get(f"/api/runs/{run['id']}").json()["run"]["nodes"]["slow"]["state"] == "running",
               30, "the slow node to start")
    r = http.post(f"/api/runs/{run['id']}/cancel")
    assert r.status_code == 200 and r.json()["run"]["status"] in ("cancelling", "cancelled")
    done = finished(http, run["id"])
    assert done["status"] == "cancelled"
    assert done["nodes"]["after"]["state"] == "cancelled" and done["nodes"]["slow"]["state"] == "cancelled"
    assert not [j for j in jobs_of(srv, run["id"]) if j.run_node == "m" and j.run_item == 2]  # never queued
    assert http.post(f"/api/runs/{run['id']}/cancel").status_code == 409


def test_repair_reruns_failed_and_reuses_succeeded(http: httpx.Client, srv: Running) -> None:
    """A node the wallet cannot cover fails visibly; after a top-up, a repair run reuses the paid node's output."""
    org = create_org(srv, "free")
    key = create_key(srv, org["id"])
    top_up(srv, org["id"], 1)  # one cent: the first node's price, not the second's
    h = {"Authorization": f"Bearer {key}"}
    agent = http.post("/api/agents", headers=h, json={"name": "pay", "dag": {"nodes": {
        "first": {"model_id": "echo-priced", "task": "chat", "payload": chat("one")},
        "second": {"model_id": "echo-priced", "task": "chat", "payload": chat("${nodes.first.result.id}")},
        "third": {"model_id": "echo", "task": "chat", "payload": chat("${nodes.second.result.id}")}}}}).json()["agent"]
    run = http.post(f"/api/agents/{agent['id']}/run", headers=h, json={}).json()["run"]
    failed = wait_until(lambda: (lambda r: r if r["status"] in FINAL else None)(
        http.get(f"/api/runs/{run['id']}", headers=h).json()["run"]), 60, "the run to end")
    assert failed["status"] == "failed" and failed["error"]["node"] == "second"
    assert failed["nodes"]["second"]["error"]["code"] == "insufficient_balance"
    assert failed["nodes"]["third"]["state"] == "skipped"
    assert failed["cost_micros"] == 10_000 and wallet(srv, org["id"])["balance_micros"] == 0
    top_up(srv, org["id"], 5)
    r = http.post(f"/api/runs/{run['id']}/retry", headers=h, json={"failed_only": True})
    assert r.status_code == 201, r.text
    repair = r.json()["run"]
    assert repair["repair_of"] == run["id"]
    done = wait_until(lambda: (lambda r: r if r["status"] in FINAL else None)(
        http.get(f"/api/runs/{repair['id']}", headers=h).json()["run"]), 60, "the repair to end")
    assert done["status"] == "succeeded", done
    assert done["nodes"]["first"]["reused_from"] == run["id"] and done["nodes"]["first"]["state"] == "succeeded"
    assert not [j for j in jobs_of(srv, repair["id"]) if j.run_node == "first"]  # not run again
    assert done["cost_micros"] == 10_000  # only `second` was paid for again
    assert wallet(srv, org["id"])["balance_micros"] == 40_000
    assert http.post(f"/api/runs/{repair['id']}/retry", headers=h, json={}).status_code == 409  # nothing failed


def test_cache_reuses_an_identical_node(http: httpx.Client, srv: Running) -> None:
    dag = {"nodes": {"a": {"model_id": "echo", "task": "chat", "cache": True, "payload": chat("${input.q}")}}}
    agent = create(http, dag)
    q = f"cache me {agent['id']}"
    one = finished(http, start(http, agent["id"], {"q": q})["id"])
    two = finished(http, start(http, agent["id"], {"q": q})["id"])
    assert one["nodes"]["a"]["state"] == "succeeded" and two["nodes"]["a"]["state"] == "cached"
    assert two["nodes"]["a"]["reused_from"] == one["id"] and two["outputs"] == one["outputs"]
    assert jobs_of(srv, two["id"]) == [] and two["cost_micros"] == 0


def test_timeout_and_retry_policy(http: httpx.Client) -> None:
    agent = create(http, {"nodes": {"a": {"model_id": "echo-slow", "task": "chat", "payload": chat("late"),
                                          "timeout_seconds": 0.2, "retry": {"max_attempts": 2, "backoff_seconds": 0}}}})
    done = finished(http, start(http, agent["id"])["id"])
    node = done["nodes"]["a"]
    assert done["status"] == "failed" and node["state"] == "failed" and node["attempts"] == 2
    assert node["error"]["code"] == "timeout"


def test_event_stream_resumes_with_last_event_id(http: httpx.Client, srv: Running) -> None:
    agent = create(http, {"nodes": {
        "a": {"model_id": "echo", "task": "chat", "payload": chat("one")},
        "m": {"type": "map", "items": "${input.xs}", "max_concurrency": 1,
              "node": {"model_id": "echo", "task": "chat", "payload": chat("${item}")}},
        "b": {"model_id": "echo", "task": "chat", "payload": chat("${nodes.a.result.id} ${nodes.m.result.items}")}}})
    run = start(http, agent["id"], {"xs": ["x", "y", "z"]})

    def read(headers: dict[str, str], stop_after: int | None) -> list[tuple[int, str, dict[str, Any]]]:
        out: list[tuple[int, str, dict[str, Any]]] = []
        with http.stream("GET", f"/api/runs/{run['id']}/events", headers=headers, timeout=60) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            eid, kind = 0, ""
            for line in resp.iter_lines():
                if line.startswith("id: "):
                    eid = int(line[4:])
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    out.append((eid, kind, json.loads(line[6:])))
                    if stop_after is not None and len(out) >= stop_after:
                        break
        return out

    snap = read({}, 1)  # a fresh connection starts with the run as it is now
    assert snap[0][1] == "snapshot" and snap[0][2]["id"] == run["id"]
    first = read({"Last-Event-ID": "0"}, 3)  # from the log's start, then cut off after three events
    rest = read({"Last-Event-ID": str(first[-1][0])}, None)
    events = first + rest
    assert events[0][1] == "run.created"
    ids = [e[0] for e in events]
    assert ids == sorted(ids) and len(ids) == len(set(ids))  # in order, none twice
    kinds = [e[1] for e in events]
    assert kinds[-1] == "run.completed" and events[-1][2]["status"] == "succeeded"
    assert "node.started" in kinds and "node.succeeded" in kinds and "map.progress" in kinds
    progress = [e[2] for e in events if e[1] == "map.progress"]
    assert progress[-1] == {"run_id": run["id"], "node": "m", "done": 3, "failed": 0, "total": 3}
    outputs = [e[2] for e in events if e[1] == "node.succeeded" and e[2]["node"] == "a"]
    assert outputs[0]["output"]["choices"][0]["message"]["content"] == "one"
    # a stream opened on a finished run: the snapshot, and the end
    again = read({}, None)
    assert [k for _, k, _ in again] == ["snapshot"] and again[0][2]["status"] == "succeeded"


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    with ServerThread(rec.app()) as s:
        yield rec, s.url + "/hook"


def test_webhook_gets_the_final_event_signed(http: httpx.Client, srv: Running,
                                             receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    agent = create(http, {"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("hook")}}})
    run = start(http, agent["id"], webhook_url=url)

    def ours() -> tuple[dict[str, str], bytes] | None:  # the receiver serves both databases' servers
        with rec.lock:
            return next((c for c in rec.calls if run["id"].encode() in c[1]), None)
    headers, body = wait_until(ours, 30, "the run's webhook")
    secret = http.get("/api/webhook-secret").json()["secret"]
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "run.completed" and payload["run_id"] == run["id"] and payload["status"] == "succeeded"


def test_costs_roll_up_per_node_and_run(http: httpx.Client, srv: Running) -> None:
    org = create_org(srv, "free")
    key = create_key(srv, org["id"])
    top_up(srv, org["id"], 100)
    h = {"Authorization": f"Bearer {key}"}
    agent = http.post("/api/agents", headers=h, json={"name": "c", "dag": {"nodes": {
        "m": {"type": "map", "items": "${input.xs}", "node": {"model_id": "echo-priced", "task": "chat",
                                                              "payload": chat("${item}")}},
        "s": {"model_id": "echo-priced", "task": "chat", "payload": chat("${nodes.m.result.errors}")}}}}).json()
    run = http.post(f"/api/agents/{agent['agent']['id']}/run", headers=h, json={"input_params": {"xs": [1, 2]}})
    done = wait_until(lambda: (lambda r: r if r["status"] in FINAL else None)(
        http.get(f"/api/runs/{run.json()['run']['id']}", headers=h).json()["run"]), 60, "the run to end")
    # the map's items are numbers: not valid chat content, refused before any money moved
    assert done["nodes"]["m"]["state"] == "failed" and done["nodes"]["m"]["usage"]["calls"] == 0
    run2 = http.post(f"/api/agents/{agent['agent']['id']}/run", headers=h, json={"input_params": {"xs": ["1", "2"]}})
    done = wait_until(lambda: (lambda r: r if r["status"] in FINAL else None)(
        http.get(f"/api/runs/{run2.json()['run']['id']}", headers=h).json()["run"]), 60, "the run to end")
    assert done["status"] == "succeeded"
    assert done["nodes"]["m"]["usage"]["cost_micros"] == 20_000 and done["nodes"]["s"]["usage"]["cost_micros"] == 10_000
    assert done["cost_micros"] == 30_000 and done["usage"]["calls"] == 3
    # each node names what it waits for (here a reference implies the edge), so a client can draw the graph
    assert done["nodes"]["m"]["depends_on"] == [] and done["nodes"]["s"]["depends_on"] == ["m"]
    assert wallet(srv, org["id"])["balance_micros"] == 1_000_000 - 30_000


def test_org_isolation_and_scopes(http: httpx.Client, srv: Running) -> None:
    agent = create(http, {"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("mine")}}})
    run = finished(http, start(http, agent["id"])["id"])
    other = create_org(srv, "free")
    h = {"Authorization": f"Bearer {create_key(srv, other['id'])}"}
    for method, url in (("GET", f"/api/agents/{agent['id']}"), ("PATCH", f"/api/agents/{agent['id']}"),
                        ("DELETE", f"/api/agents/{agent['id']}"), ("POST", f"/api/agents/{agent['id']}/run"),
                        ("GET", f"/api/runs/{run['id']}"), ("GET", f"/api/agents/{agent['id']}/runs/{run['id']}"),
                        ("GET", f"/api/runs/{run['id']}/events"), ("POST", f"/api/runs/{run['id']}/cancel"),
                        ("POST", f"/api/runs/{run['id']}/retry")):
        r = http.request(method, url, headers=h, json={"name": "x"} if method != "GET" else None)
        assert r.status_code == 404, (method, url, r.text)
        assert r.json()["error"]["type"] == "not_found_error"
    assert agent["id"] not in [a["id"] for a in http.get("/api/agents", headers=h).json()["data"]]
    assert http.get("/api/runs", headers=h).json()["data"] == []
    reader = {"Authorization": f"Bearer {create_key(srv, other['id'], ['user:read'])}"}
    r = http.post("/api/agents", headers=reader, json={"name": "x", "dag": {"nodes": {}}})
    assert r.status_code == 403
    assert http.get("/api/agents", headers=reader).status_code == 200


def test_runs_list_filters_and_pages(http: httpx.Client) -> None:
    agent = create(http, {"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("p")}}})
    ids = [start(http, agent["id"])["id"] for _ in range(3)]
    for i in ids:
        finished(http, i)
    page = http.get("/api/runs", params={"agent_id": agent["id"], "limit": 2}).json()
    assert page["has_more"] and [r["id"] for r in page["data"]] == ids[::-1][:2]
    rest = http.get("/api/runs", params={"agent_id": agent["id"], "limit": 2, "after": page["last_id"]}).json()
    assert [r["id"] for r in rest["data"]] == [ids[0]] and not rest["has_more"]
    assert http.get("/api/runs", params={"status": "nope"}).status_code == 400
    assert len(http.get("/api/runs", params={"agent_id": agent["id"], "status": "succeeded"}).json()["data"]) == 3


def test_bad_bodies_are_4xx(http: httpx.Client) -> None:
    assert http.post("/api/agents", content=b"{nope", headers={"content-type": "application/json"}).status_code == 400
    assert http.post("/api/agents", json=[1]).status_code == 400
    assert http.post("/api/agents", json={"name": "x"}).status_code == 400
    assert http.post("/api/agents", json={"name": "x", "dag": {"nodes": []}}).status_code == 400
    agent = create(http, {"nodes": {"a": {"model_id": "echo", "task": "chat", "payload": chat("b")}}})
    assert http.post(f"/api/agents/{agent['id']}/run", json={"input_params": []}).status_code == 400
    assert http.post(f"/api/agents/{agent['id']}/run", json={}, headers={"Idempotency-Key": "x" * 300}).status_code == 400
    assert http.get("/api/runs/run_nope/events", headers={"Last-Event-ID": "abc"}).status_code == 404
    # PostgreSQL refuses NUL in text: still the client's 4xx, never a 500
    for r in (http.get("/api/runs/run_%00x"), http.get("/api/jobs/job_%00x"),
              http.post("/api/agents", json={"name": "a\u0000b", "dag": {"nodes": {"a": {
                  "model_id": "echo", "task": "chat", "payload": chat("n")}}}})):
        assert r.status_code < 500, r.text


def test_a_run_counts_once_as_a_job_submission(http: httpx.Client, srv: Running) -> None:
    """The free plan allows 10 job submissions a minute: a run of a three-item map takes one of them."""
    org = create_org(srv, "free")
    h = {"Authorization": f"Bearer {create_key(srv, org['id'])}"}
    agent = http.post("/api/agents", headers=h, json={"name": "count", "dag": {"nodes": {"m": {
        "type": "map", "items": "${input.xs}", "node": {"model_id": "echo", "task": "chat",
                                                        "payload": chat("${item}")}}}}}).json()["agent"]
    seen = []
    for _ in range(2):
        r = http.post(f"/api/agents/{agent['id']}/run", headers=h, json={"input_params": {"xs": ["a", "b", "c"]}})
        assert r.status_code == 201, r.text
        assert r.headers["x-ratelimit-limit-requests"] == "10"
        seen.append(int(r.headers["x-ratelimit-remaining-requests"]))
        wait_until(lambda: http.get(f"/api/runs/{r.json()['run']['id']}", headers=h).json()["run"]["status"]
                   in FINAL, 30, "the run to end")
    assert seen == [9, 8]


def test_map_outputs_pick_each_item(http: httpx.Client) -> None:
    agent = create(http, {"nodes": {"m": {"type": "map", "items": "${input.xs}", "node": {
        "model_id": "echo", "task": "chat", "payload": chat("${item}"), "outputs": ["choices[0].message.content"]}}}})
    done = finished(http, start(http, agent["id"], {"xs": ["p", "q"]})["id"])
    assert done["outputs"]["m"] == {"items": [{"choices[0].message.content": "p"},
                                              {"choices[0].message.content": "q"}], "errors": []}
    r = http.post("/api/agents/validate", json={"dag": {"nodes": {"m": {"type": "map", "items": "${input.xs}", "node": {
        "model_id": "echo", "task": "chat", "payload": chat("${item}"), "cache": True}}}}})
    assert r.status_code == 400 and r.json()["node_errors"]["m"][0]["code"] == "unsupported_field"
