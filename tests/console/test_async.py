"""The console's async pages in Chromium: jobs, batches, agent runs and the media library.

The server under test is a gateway whose job runners are off (`job_runner: false`, as an operator runs gateways that
only accept work), so what the person submits stays queued while they look at it. `runners()` then brings up a
second server on the same database and data folder with runners on (as `modelyard serve` on another machine would
be), and the pages must follow the work from queued to done by themselves: the lists and job pages by polling, the
run page by the run's event stream.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture says so: a skip here, a failure under CI
    expect = None

from ..conftest import Running, make_settings, running, upstream_models
from ..support.accounts import create_key, create_org, top_up
from ..support.jobs import FAST
from ..support.waiting import wait_until
from .conftest import Person, set_up_owner, shot

CHAT_PRICE_MICROS = 2_000  # stub-gpt is priced here, so a job's page has a cost to show


def _settings(tmp: Path, stub_url: str, *, job_runner: bool) -> Any:
    models = upstream_models(stub_url)
    next(m for m in models if m["id"] == "stub-gpt")["price"] = {"per_request": CHAT_PRICE_MICROS / 1e6}
    # runners poll fast; a lease outlives the built-in image model's first load (which holds the GIL for seconds)
    return make_settings(tmp, models=models, cooldown_failures=1_000_000, prompt_rewrite_model="stub-gpt",
                         job_runner=job_runner, **{**FAST, "job_lease_seconds": 60.0})


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, stub_server: Any) -> Iterator[Running]:
    """This module's server (the shared `person` fixture signs in here): a gateway without job runners."""
    tmp = tmp_path_factory.mktemp("console-async")
    with running(_settings(tmp, stub_server[0].url, job_runner=False)) as srv:
        srv.owner = set_up_owner(srv)  # type: ignore[attr-defined]
        srv.tmp, srv.stub_url = tmp, stub_server[0].url  # type: ignore[attr-defined]
        me = httpx.get(srv.url + "/api/v1/me", headers=srv.headers()).json()
        top_up(srv, me["organization_id"], 10_00)
        yield srv


@contextlib.contextmanager
def runners(console: Running) -> Iterator[Running]:
    """Job runners come up: a second server on the gateway's database and data folder, runners on."""
    with running(_settings(console.tmp, console.stub_url, job_runner=True)) as srv:  # type: ignore[attr-defined]
        yield srv


def chat(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def mark(page: Any) -> None:
    """A mark on the page's window: still there later means the page was never reloaded."""
    page.evaluate("window.__notReloaded = true")


def not_reloaded(page: Any) -> bool:
    return page.evaluate("window.__notReloaded === true")


# ---------------------------------------------------------------- jobs

def test_jobs_follow_queued_work_to_its_results_and_a_queued_job_cancels(person: Person, console: Running) -> None:
    page = person.sign_in(then="/jobs")
    chat_job = person.api("POST", "/api/jobs", {"model_id": "stub-gpt", "task": "chat", "payload": chat("hello")})
    speech = person.api("POST", "/api/jobs", {"model_id": "stub-tts", "task": "speech",
                                              "payload": {"input": "hello there", "voice": "alloy"}})
    image = person.api("POST", "/api/jobs", {"model_id": "demo-image", "task": "text-to-image",
                                             "payload": {"prompt": "a red kite", "size": "64x64"}})
    doomed = person.api("POST", "/api/jobs", {"model_id": "stub-gpt", "task": "chat", "payload": chat("never")})

    # queued: no runner is up; the detail says where it waits, and it can be cancelled
    page.goto(f"/jobs/{doomed['id']}")
    status = page.get_by_test_id("status")
    expect(status).to_have_text("pending")
    page.get_by_text("ahead in the queue").wait_for()
    page.get_by_role("button", name="Cancel job").click()
    dialog = page.get_by_role("dialog")
    assert "Cancel this job?" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel the job").click()
    expect(status).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    assert person.api("GET", f"/api/jobs/{doomed['id']}")["status"] == "cancelled"

    page.goto("/jobs")
    rows = {j["id"]: page.locator(f"tr[data-job='{j['id']}']") for j in (chat_job, speech, image, doomed)}
    for job_id in (chat_job["id"], speech["id"], image["id"]):
        expect(rows[job_id].locator(".badge")).to_have_text("pending")
    expect(rows[doomed["id"]].locator(".badge")).to_have_text("cancelled")
    page.get_by_text("Updating live").wait_for()
    mark(page)
    with runners(console):
        for job_id in (chat_job["id"], speech["id"], image["id"]):  # the list polls: no reload
            rows[job_id].locator(".badge", has_text="completed").wait_for(timeout=60_000)
        assert not_reloaded(page)
        page.get_by_text("Updating live").wait_for(state="hidden")
        shot(page, "jobs")

        # the filter is kept in the URL
        page.get_by_label("Status").select_option("cancelled")
        page.wait_for_url(re.compile(r"/jobs\?status=cancelled$"))
        expect(rows[chat_job["id"]]).to_have_count(0)
        expect(rows[doomed["id"]]).to_be_visible()

        # a chat job: its text, its request, and what it cost once settled
        page.goto(f"/jobs/{chat_job['id']}")
        expect(page.get_by_test_id("result-text")).to_have_text("Hello from the stub upstream")
        page.get_by_text("$0.002").wait_for()
        assert '"content": "hello"' in page.locator("pre").last.inner_text()
        shot(page, "job")

        # speech plays in an audio element, the image shows inline, both from the media store
        page.goto(f"/jobs/{speech['id']}")
        audio = page.locator("audio[controls]")
        audio.wait_for()
        assert "/media/" in audio.get_attribute("src")
        page.goto(f"/jobs/{image['id']}")
        img = page.get_by_role("img", name="Image 1 of the result")
        img.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth === 64", arg=img.element_handle())
        shot(page, "job-image")
    assert not person.errors, person.errors


# ---------------------------------------------------------------- batches

def _batch(client: Any, prompts: list[str]) -> Any:
    lines = [json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "stub-gpt", **chat(p)}}) for i, p in enumerate(prompts)]
    upload = client.files.create(file=("requests.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                                 metadata={"made_by": "console test"})


def test_batches_show_progress_to_the_end_and_one_cancels(person: Person, console: Running) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=console.v1, api_key=console.admin_key)
    batch = _batch(client, ["one", "two", "three"])
    doomed = _batch(client, ["never"])
    page = person.sign_in(then="/batches")
    row = page.locator(f"tr[data-batch='{batch.id}']")
    expect(row.locator(".badge")).to_have_text("validating")
    page.get_by_text("Updating live").wait_for()

    # cancelled while still validating: it ends once a driver (where runners run) looks at it
    page.goto(f"/batches/{doomed.id}")
    page.get_by_role("button", name="Cancel batch").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel the batch").click()
    expect(page.get_by_test_id("status")).to_have_text("cancelling")
    assert client.batches.retrieve(doomed.id).status == "cancelling"

    page.goto("/batches")
    mark(page)
    with runners(console):
        expect(row.locator(".badge")).to_have_text("completed", timeout=60_000)
        expect(row.get_by_test_id("counts")).to_have_text("3 / 3 done")
        expect(page.locator(f"tr[data-batch='{doomed.id}'] .badge")).to_have_text("cancelled", timeout=60_000)
        assert not_reloaded(page)
        assert row.get_by_role("progressbar").get_attribute("aria-valuenow") == "3"
        shot(page, "batches")

    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3
    page.goto(f"/batches/{batch.id}")
    expect(page.get_by_test_id("counts")).to_have_text("3 of 3 requests done.")
    expect(page.get_by_test_id("completed")).to_have_text("3")
    expect(page.get_by_role("button", name="Cancel batch")).to_be_hidden()
    link = page.get_by_role("link", name="Download the output file")
    # the link downloads the output file with the session's cookie: one answer per request, in input order
    answer = page.request.get(link.get_attribute("href"))
    assert answer.status == 200
    lines = [json.loads(x) for x in answer.text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["r0", "r1", "r2"]
    assert lines[0]["response"]["body"]["choices"][0]["message"]["content"] == "Hello from the stub upstream"
    assert "made_by" in page.locator("dl.kv").last.inner_text()
    shot(page, "batch")
    page.goto(f"/batches/{doomed.id}")
    expect(page.get_by_test_id("status")).to_have_text("cancelled")
    expect(page.get_by_role("link", name="Download the error file")).to_be_visible()
    assert not person.errors, person.errors


# ---------------------------------------------------------------- agent runs

AGENT = {"name": "draft and polish", "dag": {"nodes": {
    "draft": {"model_id": "stub-gpt", "task": "chat", "payload": chat("Write about ${input.topic}.")},
    "polish": {"model_id": "stub-gpt", "task": "chat",
               "payload": chat("Polish this: ${nodes.draft.result.choices[0].message.content}")},
    "angles": {"type": "map", "items": "${input.angles}", "max_concurrency": 2,
               "node": {"model_id": "stub-gpt", "task": "chat", "payload": chat("${input.topic} from ${item}")}}}}}
INPUTS = {"topic": "kites", "angles": ["above", "below"]}


def test_a_runs_graph_turns_green_live_and_a_cancelled_run_is_repaired(person: Person, console: Running) -> None:
    page = person.sign_in(then="/runs")
    agent = person.api("POST", "/api/agents", AGENT)["agent"]
    run = person.api("POST", f"/api/agents/{agent['id']}/run", {"input_params": INPUTS})["run"]
    doomed = person.api("POST", f"/api/agents/{agent['id']}/run", {"input_params": INPUTS})["run"]
    page.goto("/runs")
    # a run starts as it is submitted: its first nodes' jobs wait in the queue
    expect(page.locator(f"tr[data-run='{run['id']}'] .badge")).to_have_text("running")
    expect(page.locator(f"tr[data-run='{run['id']}']")).to_contain_text("draft and polish")

    page.goto(f"/runs/{doomed['id']}")
    page.get_by_role("button", name="Cancel run").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel the run").click()
    expect(page.get_by_test_id("status")).to_have_text("cancelling")

    page.goto(f"/runs/{run['id']}")
    expect(page.get_by_test_id("stream")).to_have_text("live: following the run's events")  # the cookie opened it
    nodes = {n: page.locator(f".gnode[data-node='{n}']") for n in ("draft", "polish", "angles")}
    for n, state in (("draft", "queued"), ("polish", "pending"), ("angles", "running")):  # its items are queued
        expect(nodes[n]).to_have_attribute("data-state", state)
    assert page.locator(".graph path.edge").count() == 1  # draft -> polish; the map stands alone
    # columns by depth: polish sits right of draft
    assert nodes["polish"].bounding_box()["x"] > nodes["draft"].bounding_box()["x"]
    mark(page)
    with runners(console):
        for n, node in nodes.items():  # from the event stream: no reload, no polling
            expect(node).to_have_attribute("data-state", "succeeded", timeout=60_000)
            expect(node).to_contain_text("succeeded")
        expect(page.get_by_test_id("status")).to_have_text("succeeded")
        expect(page.get_by_test_id("stream")).to_have_text("ended")
        assert not_reloaded(page)
        assert page.locator(".graph path.edge.done").count() == 1
        expect(page.get_by_test_id("nodes-done")).to_have_text("3 / 3")
        page.get_by_text(f"${4 * CHAT_PRICE_MICROS / 1e6:.3f}").first.wait_for()  # two nodes and two items
        nodes["polish"].click()
        expect(page.get_by_test_id("node-text")).to_have_text("Hello from the stub upstream")
        nodes["angles"].click()
        items = page.locator("tr[data-item]")
        expect(items).to_have_count(2)
        expect(items.locator(".badge")).to_have_text(["succeeded", "succeeded"])
        expect(items.first).to_contain_text("above")
        shot(page, "run")

        # the cancelled run ends cancelled; a repair reruns what did not succeed, live again
        page.goto(f"/runs/{doomed['id']}")
        expect(page.get_by_test_id("status")).to_have_text("cancelled", timeout=60_000)
        expect(nodes["draft"]).not_to_have_attribute("data-state", "succeeded")
        page.get_by_role("button", name="Retry failed nodes").click()
        page.wait_for_url(lambda url: "/runs/run_" in url and doomed["id"] not in url)
        expect(page.get_by_text("A repair of")).to_be_visible()
        for node in nodes.values():
            expect(node).to_have_attribute("data-state", "succeeded", timeout=60_000)
        repair_id = page.url.rsplit("/", 1)[1]
        page.goto("/runs")
        expect(page.locator(f"tr[data-run='{repair_id}'] .badge")).to_have_text("succeeded")
        expect(page.locator(f"tr[data-run='{doomed['id']}'] .badge")).to_have_text("cancelled")
        shot(page, "runs")
    assert person.api("GET", f"/api/runs/{run['id']}")["run"]["status"] == "succeeded"
    assert person.api("GET", f"/api/runs/{repair_id}")["run"]["repair_of"] == doomed["id"]
    assert not person.errors, person.errors


# ---------------------------------------------------------------- library

def test_the_library_shows_media_searches_and_shares_then_revokes_and_deletes(person: Person,
                                                                              console: Running) -> None:
    page = person.sign_in(then="/library")
    person.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    with runners(console):
        image = person.api("POST", "/api/jobs", {"model_id": "demo-image", "task": "text-to-image",
                                                 "payload": {"prompt": "a green lighthouse at dusk", "size": "64x64"}})
        speech = person.api("POST", "/api/jobs", {"model_id": "stub-tts", "task": "speech",
                                                  "payload": {"input": "welcome aboard", "voice": "alloy"}})
        # an item is written where the job finished, a moment after it
        wanted = {image["id"], speech["id"]}
        wait_until(lambda: wanted <= {i["source"]["job_id"] for i in
                                      person.api("GET", "/api/library/items?limit=100")["data"]},
                   60, "the jobs' library items")
    items = {i["source"]["job_id"]: i for i in person.api("GET", "/api/library/items?limit=100")["data"]}
    lighthouse, voice = items[image["id"]], items[speech["id"]]

    page.goto("/library")
    card = page.locator(f"figure[data-item='{lighthouse['id']}']")
    img = card.get_by_role("img", name="a green lighthouse at dusk")
    img.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth === 64", arg=img.element_handle())
    expect(page.locator(f"figure[data-item='{voice['id']}'] audio[controls]")).to_have_count(1)
    shot(page, "library")

    page.get_by_label("Search").fill("lighthouse")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url(re.compile(r"/library\?q=lighthouse$"))
    expect(page.locator("figure[data-item]")).to_have_count(1)
    expect(card).to_be_visible()

    # share: the link is shown once, copied, works without a key, and stops working when revoked
    card.get_by_role("button", name="Details of a green lighthouse at dusk").click()
    dialog = page.locator("dialog.item-dialog")
    expect(dialog.get_by_test_id("share-state")).to_have_text("Not shared.")
    dialog.get_by_role("button", name="Create share link").click()
    url = dialog.get_by_test_id("share-link").inner_text()
    assert url.startswith(console.url + "/api/shares/")
    dialog.get_by_role("button", name="Copy").click()
    page.get_by_text("Share link copied to the clipboard.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == url
    shared = httpx.get(url)
    assert shared.status_code == 200 and shared.json()["model_id"] == "demo-image"
    shot(page, "library-share")
    dialog.get_by_role("button", name="Revoke link").click()
    page.get_by_role("dialog", name="Revoke the share link?").get_by_role("button", name="Revoke it").click()
    expect(dialog.get_by_test_id("share-state")).to_have_text("Not shared.")
    assert httpx.get(url).status_code == 404

    # delete: gone from the grid and from the API
    dialog.get_by_role("button", name="Delete item").click()
    page.get_by_role("dialog", name="Delete this item?").get_by_role("button", name="Delete it").click()
    expect(card).to_have_count(0)
    page.get_by_text("Nothing matches this search.").wait_for()
    assert page.request.get(f"/api/library/items/{lighthouse['id']}").status == 404
    assert not person.errors, person.errors


# ---------------------------------------------------------------- another organization's ids

def test_another_organizations_job_batch_and_run_are_not_found_here(person: Person, console: Running) -> None:
    org = create_org(console, "unlimited")
    key = create_key(console, org["id"])
    theirs = httpx.post(console.url + "/api/jobs", headers=console.headers(key),
                        json={"model_id": "stub-gpt", "task": "chat", "payload": chat("private")}).json()
    page = person.sign_in(then="/")
    for path, text in ((f"/jobs/{theirs['id']}", "No such job in this organization."),
                       ("/batches/batch_0123456789abcdef01234567", "No such batch in this organization."),
                       ("/runs/run_0123456789abcdef01234567", "No such run in this organization.")):
        page.goto(path)
        expect(page.get_by_role("alert")).to_have_text(text)
    page.goto("/jobs")
    expect(page.get_by_text("Loading…")).to_be_hidden()
    expect(page.locator(f"tr[data-job='{theirs['id']}']")).to_have_count(0)
    assert not person.errors, person.errors
