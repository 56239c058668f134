"""The workflow pages in Chromium: build a two-node agent on the Drawflow canvas (ports dragged with the mouse, and
the side panel's "Depends on" instead), see a node's problems on the node, validate, save, run it with an input and
watch both nodes succeed, reopen it as it was drawn; the list's run and delete; another org's agent is not found."""

from __future__ import annotations

import re
from typing import Any

import httpx

from ..support.accounts import create_key, create_org
from .conftest import DESKTOP, PHONE, Person, shot, unique

STUB_REPLY = "Hello from the stub upstream"  # what the stub upstream answers every chat


def node(page: Any, node_id: str) -> Any:
    """A node on the canvas, found by its id."""
    return page.locator(f'.drawflow-node[data-node-id="{node_id}"]')


def center(locator: Any) -> tuple[float, float]:
    box = locator.bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def drag_edge(page: Any, source: str, target: str) -> None:
    """Connect two nodes as a person does: press on the source's output port, move, release on the target's input."""
    x, y = center(node(page, source).locator(".output"))
    x2, y2 = center(node(page, target).locator(".input"))
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move((x + x2) / 2, (y + y2) / 2, steps=5)
    page.mouse.move(x2, y2, steps=5)
    page.mouse.up()


def add_task_node(page: Any, node_id: str, model: str | None = None) -> None:
    page.get_by_role("button", name="Add task node").click()
    page.get_by_label("Node id").fill(node_id)
    page.get_by_label("Node id").press("Tab")  # a change renames the node
    node(page, node_id).wait_for()
    if model:
        page.get_by_label("Model", exact=True).select_option(model)
        assert page.get_by_label("Task", exact=True).input_value() == "chat"  # the model's first task


def edge_drawn(page: Any, source: str, target: str) -> Any:
    """The Drawflow connection between two nodes (its classes name both ends by Drawflow's node ids)."""
    out_id = node(page, source).get_attribute("id")
    in_id = node(page, target).get_attribute("id")
    return page.locator(f"#wf-canvas svg.connection.node_out_{out_id}.node_in_{in_id}")


def test_build_validate_save_run_and_reopen_a_two_node_agent(person: Person, console: Any, stub: Any) -> None:
    page = person.sign_in(then="/workflows")
    page.get_by_role("link", name="New workflow").click()
    page.wait_for_url(console.url + "/workflows/new")
    name = unique("Draft and review")
    page.get_by_label("Workflow name").fill(name)

    # A: a chat on stub-gpt whose prompt reads the run's input
    add_task_node(page, "a", "stub-gpt")
    page.get_by_label("Prompt (the user message)").fill("Write one line about ${input.topic}.")
    assert "${input.topic}" in page.get_by_label("Input params").inner_text()  # the input is found in the prompt

    # B, first wrong: no model yet, then a request that reads a node the graph does not have
    add_task_node(page, "b")
    page.get_by_label("Request (JSON)").fill(
        '{"messages": [{"role": "user", "content": "Review: ${nodes.draft.result}"}]}')
    page.get_by_role("button", name="Validate").click()
    problems = node(page, "b").locator(".wf-n-errors")
    problems.wait_for()
    assert "'model_id' is required" in problems.inner_text()
    assert "has-errors" in (node(page, "b").get_attribute("class") or "")
    assert "has-errors" not in (node(page, "a").get_attribute("class") or "")
    assert "Problems in 1 node(s): b" in page.get_by_role("alert").first.inner_text()
    assert page.get_by_label("Model", exact=True).get_attribute("aria-invalid") == "true"  # the field says so too
    page.get_by_label("Model", exact=True).select_option("stub-gpt")
    prompt = page.get_by_label("Prompt (the user message)")
    assert prompt.input_value() == "Review: ${nodes.draft.result}"  # the JSON request moved into the form
    page.get_by_role("button", name="Validate").click()
    node(page, "b").locator(".wf-n-errors").filter(has_text="names node 'draft'").wait_for()
    assert "'model_id' is required" not in problems.inner_text()
    assert prompt.get_attribute("aria-invalid") == "true"
    shot(page, "workflow-editor-errors")

    # B, right: an edge dragged from A, and A's output referenced
    drag_edge(page, "a", "b")
    edge_drawn(page, "a", "b").wait_for()
    assert page.get_by_label("Depends on").evaluate("s => Array.from(s.selectedOptions, o => o.value)") == ["a"]
    prompt.fill("Review: ")
    reference = "${nodes.a.result.choices[0].message.content}"
    offered = page.get_by_label("Reference").locator("option").all_inner_texts()
    assert "${input.topic}" in offered and reference in offered and "${nodes.b.result}" not in offered
    page.get_by_label("Reference").select_option(reference)
    page.get_by_role("button", name="Insert reference").click()
    assert prompt.input_value() == "Review: " + reference
    page.get_by_role("button", name="Validate").click()
    page.get_by_role("status").filter(has_text="Valid. Runs a → b; asks for topic.").wait_for()
    assert node(page, "b").locator(".wf-n-errors").count() == 0

    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").filter(has_text="Saved: version 1.").wait_for()
    page.wait_for_url(re.compile(r"/workflows/agent_[0-9a-f]+$"))
    agent_id = page.url.rsplit("/", 1)[1]
    saved = person.api("GET", f"/api/agents/{agent_id}")["agent"]
    dag = saved["dag"]
    assert saved["name"] == name and set(dag["nodes"]) == {"a", "b"}
    assert dag["nodes"]["a"] == {"model_id": "stub-gpt", "task": "chat", "payload": {"messages": [
        {"role": "user", "content": "Write one line about ${input.topic}."}]}}
    assert dag["nodes"]["b"]["payload"]["messages"] == [{"role": "user", "content": "Review: " + reference}]
    assert dag["edges"] == []  # B's reference to A is its dependency: no edge needs writing
    assert set(dag["layout"]) == {"a", "b"}

    # run it with an input and watch both nodes finish on the canvas, live from the run's events
    stub.delay = 1.0  # each call takes a moment: the run is seen running
    try:
        page.get_by_role("button", name="Run…").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("input.topic").fill("otters")
        dialog.get_by_role("button", name="Start run").click()
        run_link = page.get_by_role("link", name="Run details")
        run_link.wait_for()
        shot(page, "workflow-editor-running")
        node(page, "a").locator(".badge.succeeded").wait_for()
        node(page, "b").locator(".badge.succeeded").wait_for()
    finally:
        stub.delay = 0.0
    page.locator(".wf-run .badge.succeeded").wait_for()
    assert "st-succeeded" in (node(page, "a").get_attribute("class") or "")
    assert "st-succeeded" in (node(page, "b").get_attribute("class") or "")
    run_id = (run_link.get_attribute("href") or "").rsplit("/", 1)[1]
    assert run_link.get_attribute("href") == f"/runs/{run_id}"
    page.get_by_label("Selected node").select_option("b")
    assert page.locator(".wf-headline").inner_text() == STUB_REPLY  # B's output, in its panel
    shot(page, "workflow-editor-run-done")
    page.set_viewport_size(PHONE)  # the panel goes below the canvas; nothing is wider than the phone
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    canvas, panel = page.locator("#wf-canvas").bounding_box(), page.locator(".wf-panel").bounding_box()
    assert canvas is not None and panel is not None and panel["y"] >= canvas["y"] + canvas["height"]
    page.set_viewport_size(DESKTOP)

    run = person.api("GET", f"/api/runs/{run_id}")["run"]
    assert run["status"] == "succeeded" and run["agent_id"] == agent_id and run["input_params"] == {"topic": "otters"}
    assert run["nodes"]["a"]["inputs"]["messages"][0]["content"] == "Write one line about otters."
    assert run["nodes"]["b"]["inputs"]["messages"][0]["content"] == "Review: " + STUB_REPLY  # A's output, read
    assert run["nodes"]["b"]["state"] == "succeeded"
    assert run["nodes"]["b"]["result"]["choices"][0]["message"]["content"] == STUB_REPLY

    # reopen: the canvas is rebuilt from the saved agent, where the nodes were drawn, with the edge
    page.goto(f"/workflows/{agent_id}")
    node(page, "a").wait_for()
    node(page, "b").wait_for()
    edge_drawn(page, "a", "b").wait_for()
    assert page.get_by_label("Workflow name").input_value() == name
    for nid in ("a", "b"):
        pos = dag["layout"][nid]
        assert node(page, nid).evaluate("el => [el.style.left, el.style.top]") == [f"{pos['x']}px", f"{pos['y']}px"]
    page.get_by_label("Selected node").select_option("b")
    assert page.get_by_label("Prompt (the user message)").input_value() == "Review: " + reference
    assert page.get_by_label("Model", exact=True).input_value() == "stub-gpt"
    # the latest run's states come back with it
    node(page, "b").locator(".badge.succeeded").wait_for()
    assert page.locator("h1").inner_text().endswith(name)
    assert not person.errors, person.errors


def test_the_side_panel_builds_the_same_graph_without_a_mouse(person: Person, console: Any) -> None:
    """"Depends on" draws an edge, the Delete key in a text field types (it does not delete the node), a button
    deletes a node, and a reference that would need an edge the canvas lacks draws it."""
    page = person.sign_in(then="/workflows/new")
    page.get_by_label("Workflow name").fill(unique("Keyboard"))
    add_task_node(page, "first", "stub-gpt")
    page.get_by_label("Prompt (the user message)").fill("One word for ${input.mood}")
    add_task_node(page, "second", "stub-gpt")
    page.get_by_label("Prompt (the user message)").fill("Another word")
    page.get_by_label("Depends on").select_option(["first"])
    edge_drawn(page, "first", "second").wait_for()

    # a third node, deleted by its button; Delete typed in its prompt first only edits the text
    add_task_node(page, "extra", "stub-gpt")
    prompt = page.get_by_label("Prompt (the user message)")
    prompt.fill("gone soon")
    prompt.press("Home")
    prompt.press("Delete")
    assert prompt.input_value() == "one soon"
    assert node(page, "extra").count() == 1
    page.get_by_role("button", name="Delete node").click()
    node(page, "extra").wait_for(state="detached")
    # on the canvas, a node reached with Tab goes with the Delete key
    add_task_node(page, "spare")
    node(page, "spare").focus()
    page.keyboard.press("Delete")
    node(page, "spare").wait_for(state="detached")
    assert page.get_by_label("Selected node").locator("option").all_inner_texts()[1:] == ["first", "second"]

    # a cycle is refused: first may not depend on second, which already runs after it
    page.get_by_label("Selected node").select_option("first")
    assert page.get_by_label("Depends on").locator("option").count() == 0

    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").filter(has_text="Saved: version 1.").wait_for()
    agent_id = page.url.rsplit("/", 1)[1]
    dag = person.api("GET", f"/api/agents/{agent_id}")["agent"]["dag"]
    assert set(dag["nodes"]) == {"first", "second"} and dag["edges"] == [["first", "second"]]  # no reference: written
    v = person.api("POST", "/api/agents/validate", {"dag": dag})
    assert v["order"] == ["first", "second"] and v["inputs"] == ["mood"]

    # renaming a node rewrites the references to it
    page.get_by_label("Selected node").select_option("second")
    page.get_by_label("Prompt (the user message)").fill("Echo ${nodes.first.result.choices[0].message.content}")
    page.get_by_label("Selected node").select_option("first")
    page.get_by_label("Node id").fill("opening")
    page.get_by_label("Node id").press("Tab")
    node(page, "opening").wait_for()
    page.get_by_label("Selected node").select_option("second")
    assert page.get_by_label("Prompt (the user message)").input_value() == \
        "Echo ${nodes.opening.result.choices[0].message.content}"
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").filter(has_text="Saved: version 2.").wait_for()
    dag = person.api("GET", f"/api/agents/{agent_id}")["agent"]["dag"]
    assert set(dag["nodes"]) == {"opening", "second"} and dag["edges"] == []
    shot(page, "workflow-editor-panel")
    assert not person.errors, person.errors


def test_a_map_node_runs_its_request_once_per_item(person: Person, console: Any) -> None:
    page = person.sign_in(then="/workflows/new")
    page.get_by_label("Workflow name").fill(unique("Per word"))
    page.get_by_role("button", name="Add map node").click()
    node(page, "map1").wait_for()
    assert "map" in node(page, "map1").inner_text()
    page.get_by_label("Items (a template resolving to a list)").fill("${input.words}")
    page.get_by_label("Model (for each item)").select_option("stub-gpt")
    page.get_by_label("Prompt (the user message)").fill("Say ")
    assert "${item}" in page.get_by_label("Reference").locator("option").all_inner_texts()
    page.get_by_label("Reference").select_option("${item}")
    page.get_by_role("button", name="Insert reference").click()
    page.get_by_role("button", name="Run…").click()  # saves first
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("input.words").fill('["one", "two", "three"]')
    dialog.get_by_role("button", name="Start run").click()
    node(page, "map1").locator(".badge.succeeded").wait_for()
    assert "3/3 items" in node(page, "map1").inner_text()
    agent_id = page.url.rsplit("/", 1)[1]
    assert person.api("GET", f"/api/agents/{agent_id}")["agent"]["dag"]["nodes"]["map1"] == {
        "type": "map", "items": "${input.words}", "node": {"model_id": "stub-gpt", "task": "chat", "payload": {
            "messages": [{"role": "user", "content": "Say ${item}"}]}}}
    run_id = (page.get_by_role("link", name="Run details").get_attribute("href") or "").rsplit("/", 1)[1]
    run = person.api("GET", f"/api/runs/{run_id}")["run"]
    assert run["status"] == "succeeded" and run["input_params"] == {"words": ["one", "two", "three"]}
    assert run["nodes"]["map1"]["progress"] == {"done": 3, "failed": 0, "total": 3}
    assert not person.errors, person.errors


def test_the_list_runs_and_deletes_workflows(person: Person, console: Any) -> None:
    page = person.sign_in(then="/workflows")
    name = unique("Listed")
    agent = person.api("POST", "/api/agents", {"name": name, "dag": {"nodes": {
        "only": {"model_id": "stub-gpt", "task": "chat",
                 "payload": {"messages": [{"role": "user", "content": "${input.word}"}]}}}}})["agent"]
    page.reload()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))
    row.wait_for()
    assert row.get_by_role("cell").nth(1).inner_text() == "1" and "never run" in row.inner_text()

    row.get_by_role("button", name=f"Run {name}").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("input.word").fill("hello")
    dialog.get_by_role("button", name="Start run").click()
    started = page.get_by_role("status").filter(has_text="started")
    started.wait_for()
    run_id = started.get_by_role("link").inner_text()
    assert started.get_by_role("link").get_attribute("href") == f"/runs/{run_id}"
    row.locator(".badge.succeeded").wait_for()  # polled until it ends
    run = person.api("GET", f"/api/runs/{run_id}")["run"]
    assert run["status"] == "succeeded" and run["input_params"] == {"word": "hello"}
    shot(page, "workflows")

    row.get_by_role("button", name=f"Delete {name}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete workflow").click()
    row.wait_for(state="detached")
    r = httpx.get(f"{console.url}/api/agents/{agent['id']}", headers=console.headers())
    assert r.status_code == 404
    assert not person.errors, person.errors


def test_another_organizations_workflow_is_not_found(person: Person, console: Any) -> None:
    org = create_org(console)
    key = create_key(console, org["id"], scopes=["user:read", "user:write"])
    r = httpx.post(f"{console.url}/api/agents", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                   json={"name": "theirs", "dag": {"nodes": {"x": {"model_id": "stub-gpt", "task": "chat", "payload": {
                       "messages": [{"role": "user", "content": "hi"}]}}}}})
    assert r.status_code == 201, r.text
    theirs = r.json()["agent"]["id"]
    page = person.sign_in(then=f"/workflows/{theirs}")
    alert = page.get_by_role("alert").filter(has_text="No workflow")
    alert.wait_for()
    assert theirs in alert.inner_text()
    assert page.locator(".drawflow-node").count() == 0
    page.goto("/workflows")
    page.get_by_role("link", name="New workflow").wait_for()
    assert page.get_by_role("link", name="theirs", exact=True).count() == 0
    assert not person.errors, person.errors
