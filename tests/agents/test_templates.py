"""The template language and the document's structural checks, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.agents import dag as dagmod
from modelyard.agents.templates import Scope, TemplateError, parse, parse_ref, render, walk

SCOPE = Scope({"prompt": "a fox", "n": 2, "tags": ["x", "y"], "obj": {"k": [1, {"deep": "v"}]}},
              {"gen": {"images": [{"url": "https://h/i.png", "width": 8}], "items": [{"u": "a"}, {"u": "b"}]}})


@pytest.mark.parametrize("template, want", [
    ("${input.prompt}", "a fox"),
    ("${input.n}", 2),  # one template keeps its JSON type
    ("${input.tags}", ["x", "y"]),
    ("${input.obj.k[1].deep}", "v"),
    ("${nodes.gen.result.images[0].url}", "https://h/i.png"),
    ("${nodes.gen.result}", {"images": [{"url": "https://h/i.png", "width": 8}], "items": [{"u": "a"}, {"u": "b"}]}),
    ("draw ${input.prompt} x${input.n}", "draw a fox x2"),  # inside text: rendered as text
    ("tags: ${input.tags}", 'tags: ["x","y"]'),
    ("cost $${input.n} and ${input.n}", "cost ${input.n} and 2"),  # $${ is a literal ${
    ("no templates", "no templates"),
    ("${ input.prompt }", "a fox"),
])
def test_render_strings(template: str, want: Any) -> None:
    assert render(template, SCOPE) == want


def test_each_expands_inside_a_list_and_binds_item() -> None:
    payload = {"messages": [{"role": "system", "content": "sum"},
                            {"$each": "${nodes.gen.result.items}", "template": {"role": "user", "content": "${item.u}"}},
                            {"role": "user", "content": "end"}]}
    assert render(payload, SCOPE)["messages"] == [
        {"role": "system", "content": "sum"}, {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
        {"role": "user", "content": "end"}]
    assert render({"list": {"$each": "${input.tags}", "template": "t-${item}"}}, SCOPE) == {"list": ["t-x", "t-y"]}
    with pytest.raises(TemplateError) as exc:
        render([{"$each": "${input.prompt}", "template": 1}], SCOPE)
    assert exc.value.code == "not_an_array"


def test_item_binds_in_a_map_scope() -> None:
    assert render({"prompt": "${item.name}", "raw": "${item}"}, SCOPE.with_item({"name": "z"})) == {
        "prompt": "z", "raw": {"name": "z"}}
    with pytest.raises(TemplateError):
        render("${item}", SCOPE)


@pytest.mark.parametrize("template, code", [
    ("${input.missing}", "missing_value"),
    ("${input.tags[5]}", "missing_value"),
    ("${input.prompt.x}", "missing_value"),
    ("${nodes.nope.result}", "missing_value"),
])
def test_resolution_errors_name_the_template(template: str, code: str) -> None:
    with pytest.raises(TemplateError) as exc:
        render(template, SCOPE)
    assert exc.value.code == code and template in exc.value.message


@pytest.mark.parametrize("text", ["${input}", "${inputs.x}", "${nodes.a}", "${nodes.a.output}", "${input.a..b}",
                                  "${open", "${__import__('os')}", "${input.a + 1}"])
def test_only_paths_parse_never_code(text: str) -> None:
    with pytest.raises(TemplateError):
        parse(text)


def test_walk_reports_every_bad_template_with_its_path() -> None:
    errors: list[TemplateError] = []
    refs = list(walk({"a": "${bad", "b": ["${input.x}", "${nodes..}"], "c": {"$each": "${input.l}",
                                                                             "template": "${item.v}"}},
                     "p", errors=errors))
    assert [(r.root, where, bound) for r, where, bound in refs] == [
        ("input", "p.b[0]", False), ("input", "p.c.$each", False), ("item", "p.c.template", True)]
    assert [e.path for e in errors] == ["p.a", "p.b[1]"]
    assert parse_ref("nodes.gen.result.images[0].url").path == ("images", 0, "url")


def test_graph_orders_and_finds_sinks_and_dependents() -> None:
    problems = dagmod.Problems()
    graph = dagmod.parse({"nodes": {
        "c": {"model_id": "m", "task": "chat", "payload": {"x": "${nodes.b.result}"}},
        "b": {"model_id": "m", "task": "chat", "payload": {"x": "${nodes.a.result}"}},
        "a": {"model_id": "m", "task": "chat", "payload": {"x": "${input.q}"}},
        "z": {"model_id": "m", "task": "chat"}}, "edges": [{"from": "z", "to": "a"}]}, problems)
    assert not problems and graph is not None
    assert graph.order == ["z", "a", "b", "c"] and graph.sinks() == ["c"]
    assert graph.dependents("a") == {"b", "c"} and graph.inputs_needed() == {"q": {"a"}}


def test_a_cycle_is_named_in_order() -> None:
    problems = dagmod.Problems()
    dagmod.parse({"nodes": {"a": {"model_id": "m", "task": "t", "payload": {"x": "${nodes.c.result}"}},
                            "b": {"model_id": "m", "task": "t", "payload": {"x": "${nodes.a.result}"}},
                            "c": {"model_id": "m", "task": "t", "payload": {"x": "${nodes.b.result}"}}}}, problems)
    assert [p.message for p in problems.by_node["a"]] == ["The graph has a cycle: a -> b -> c -> a."]


def test_list_form_duplicates_and_both_payload_fields() -> None:
    problems = dagmod.Problems()
    dagmod.parse({"nodes": [{"id": "a", "model_id": "m", "task": "t"}, {"id": "a", "model_id": "m", "task": "t"},
                            {"id": "b", "model_id": "m", "task": "t", "inputs": {}, "payload": {}},
                            {"id": "c", "model_id": "m", "task": "t", "extra": 1, "retry": {"max_attempts": 99}}]},
                 problems)
    codes = {n: [p.code for p in ps] for n, ps in problems.by_node.items()}
    assert codes == {"a": ["duplicate_id"], "b": ["conflicting_fields"], "c": ["unknown_field", "invalid_value"]}
