"""What the graph's structure cannot say alone: models and tasks from the catalog, and each payload checked with the
request schema its sync route uses — with templates standing in for values only a run will know."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from pydantic import ValidationError

from ..catalog import Catalog
from ..errors import InvalidRequest, ModelyardError
from ..jobs.tasks import PYDANTIC_TYPES, parse_task, validate_payload
from ..protocols.openai.wire import param_from_loc
from ..types import Task
from .dag import Graph, Node, Problems
from .templates import EACH, Scope, TemplateError, has_template, render, whole


def check_models(graph: Graph, catalog: Catalog, problems: Problems,
                 allowed: Callable[[str], bool] = lambda _model_id: True) -> dict[str, Task]:
    """Each node's model exists, the caller's plan may use it (`allowed`) and it serves its task (aliases like
    `fal/text-to-image` accepted); the payloads pass their task's request schema wherever a value is already known.
    Returns each good node's task."""
    tasks: dict[str, Task] = {}
    for node in graph.nodes.values():
        where = f"dag.nodes.{node.id}" + (".node" if node.kind == "map" else "")
        try:
            task = parse_task(node.step.task, param=f"{where}.task")
        except ModelyardError as exc:
            problems.add(node.id, exc.code or "invalid_task", exc.message, f"{where}.task")
            continue
        try:
            model = catalog.get(node.step.model_id, param=f"{where}.model_id")
        except ModelyardError as exc:
            problems.add(node.id, "unknown_model", exc.message, f"{where}.model_id")
            continue
        if not allowed(model.id):
            problems.add(node.id, "model_not_in_plan", f"The model '{model.id}' is not available on your plan.",
                         f"{where}.model_id")
            continue
        if task not in model.tasks:
            problems.add(node.id, "unsupported_task", f"Model '{model.id}' does not serve {task.value} (it serves "
                         f"{', '.join(sorted(t.value for t in model.tasks))}).", f"{where}.task")
            continue
        tasks[node.id] = task
        check_payload(node, task, model.id, node.step.payload, problems)
    return tasks


def _probe(value: Any, path: str, templated: list[str]) -> Any:
    """The payload as the schema will see it: a `$each` becomes one rendering of its template, and every string
    holding a template is noted (the schema's complaints about those wait for the run's real values)."""
    if isinstance(value, str):
        if has_template(value):
            templated.append(path)
        return value
    if isinstance(value, list):
        out = []
        for v in value:
            if isinstance(v, Mapping) and EACH in v:
                out.append(_probe(v.get("template"), f"{path}[{len(out)}]", templated))
            else:
                out.append(_probe(v, f"{path}[{len(out)}]", templated))
        return out
    if isinstance(value, Mapping):
        if EACH in value:
            return [_probe(value.get("template"), f"{path}[0]", templated)]
        return {k: _probe(v, f"{path}.{k}" if path else str(k), templated) for k, v in value.items()}
    return value


def _under(param: str | None, templated: list[str]) -> bool:
    if not param:
        return bool(templated)  # a whole-request complaint may come from a value not known yet
    return any(param == t or param.startswith(t + ".") or param.startswith(t + "[") for t in templated)


def check_payload(node: Node, task: Task, model_id: str, payload: Mapping[str, Any], problems: Problems) -> None:
    """Every schema problem in the payload that no template can explain, each with its JSON path."""
    base = node.payload_path
    templated: list[str] = []
    probe = _probe(payload, "", templated)
    cls = PYDANTIC_TYPES.get(task)
    if cls is not None:
        if "model" in probe:
            problems.add(node.id, "invalid_field", "Leave 'model' out of the payload: the node's model_id names it.",
                         f"{base}.model")
        try:
            req = cls.model_validate({**probe, "model": model_id})
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                param = param_from_loc(err["loc"])
                if _under(param, templated):
                    continue
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "missing":
                    msg = "is required"
                elif err["type"] == "extra_forbidden":
                    msg = "is not a field of this task's request"
                problems.add(node.id, "invalid_payload", f"'{param}': {msg}." if param else msg + ".",
                             f"{base}.{param}" if param else base)
            return
        if task == Task.CHAT and getattr(req, "stream", False):
            problems.add(node.id, "invalid_payload", "A node cannot stream; leave 'stream' out.", f"{base}.stream")
        return
    try:
        validate_payload(task, dict(probe), model_id)
    except InvalidRequest as exc:
        if not _under(exc.param, templated):
            problems.add(node.id, "invalid_payload", exc.message, f"{base}.{exc.param}" if exc.param else base)


def check_inputs(graph: Graph, tasks: Mapping[str, Task], catalog: Catalog, inputs: Mapping[str, Any],
                 problems: Problems) -> None:
    """At run time: every input a node reads is given, a map's `items` and a `$each` read from inputs are arrays,
    and nodes that read only inputs pass their schema with the real values."""
    for node in graph.nodes.values():
        for ref, where, _ in node.refs:
            if ref.root != "input":
                continue
            name = str(ref.path[0])
            if name not in inputs:
                problems.add(node.id, "missing_input", f"{ref} needs input_params.{name}, which the run does not give.",
                             where)
                continue
            try:
                Scope(inputs, {}).resolve(ref)
            except TemplateError as exc:
                problems.add(node.id, exc.code, exc.message, where)
        if any(p.code == "missing_input" for p in problems.by_node.get(node.id, [])):
            continue
        if node.kind == "map" and node.items:
            ref = whole(node.items)
            if ref is not None and ref.root == "input":
                try:
                    value = Scope(inputs, {}).resolve(ref)
                except TemplateError:
                    continue
                if not isinstance(value, list):
                    problems.add(node.id, "not_an_array", f"'items' {ref} is {type(value).__name__}, not an array.",
                                 f"dag.nodes.{node.id}.items")
                    continue
        if node.id in tasks and not any(r.root == "nodes" for r, _, _ in node.refs):
            try:
                payload = render(node.step.payload, Scope(inputs, {})) if node.kind == "task" else None
            except TemplateError as exc:
                problems.add(node.id, exc.code, exc.message, node.payload_path)
                continue
            if payload is not None:
                check_payload(node, tasks[node.id], catalog.get(node.step.model_id).id, payload, problems)
