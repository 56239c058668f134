"""An agent's document: parsed into nodes and edges, and checked whole — every problem at once, keyed by node.

The shape is the API reference's (`dag: {nodes: {id: node}, edges: [[from, to]] | [{from, to}]}`; task nodes
`{model_id, task, inputs | payload, outputs?, retry?, timeout_seconds?, cache?}`; map nodes
`{type: "map", items, node: {model_id, task, payload}, max_concurrency?, tolerance?}`). Structure is checked here
without the catalog; `agents/checks.py` adds what needs the catalog (models, tasks, request schemas).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .templates import EACH, Ref, TemplateError, parse_path, walk, whole

NODE_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
TASK_FIELDS = {"type", "model_id", "task", "inputs", "payload", "outputs", "retry", "timeout_seconds", "cache",
               "description"}
MAP_FIELDS = {"type", "items", "node", "max_concurrency", "tolerance", "description", "outputs"}
INNER_FIELDS = {"model_id", "task", "inputs", "payload", "outputs", "retry", "timeout_seconds", "cache"}
DEFAULT_MAX_CONCURRENCY = 4
MAX_ATTEMPTS_CAP = 10
MAX_TIMEOUT = 24 * 3600
MAX_COORD = 1_000_000  # a node's drawn position (dag.layout), either axis


@dataclass
class Problem:
    code: str
    message: str
    path: str

    def public(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "path": self.path}


@dataclass
class Problems:
    """Every problem found, by node id (`_graph` for the graph's own: edges, shape)."""

    by_node: dict[str, list[Problem]] = field(default_factory=dict)

    def add(self, node: str, code: str, message: str, path: str) -> None:
        self.by_node.setdefault(node, []).append(Problem(code, message, path))

    def __bool__(self) -> bool:
        return bool(self.by_node)

    def count(self) -> int:
        return sum(len(v) for v in self.by_node.values())

    def public(self) -> dict[str, list[dict[str, str]]]:
        return {k: [p.public() for p in v] for k, v in self.by_node.items()}

    def first(self) -> Problem:
        return next(iter(self.by_node.values()))[0]


@dataclass
class Step:
    """What runs: a model, a task, a payload template, and how to retry it (a task node, or a map's inner node)."""

    model_id: str
    task: str
    payload: dict[str, Any]
    payload_key: str  # "inputs" or "payload", as the document wrote it (paths in errors say the same)
    outputs: list[tuple[str, tuple[str | int, ...]]] | None = None
    max_attempts: int | None = None
    backoff_seconds: float | None = None
    timeout_seconds: float | None = None
    cache: bool = False


@dataclass
class Node:
    id: str
    kind: str  # task | map
    step: Step
    items: str | None = None  # a map's template resolving to its array
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    tolerance: float = 0.0
    # what the node shows of its result (a task node: its `outputs`; a map: the map's own, over {items, errors})
    outputs: list[tuple[str, tuple[str | int, ...]]] | None = None
    deps: set[str] = field(default_factory=set)  # nodes that must succeed first (edges and references)
    refs: list[tuple[Ref, str, bool]] = field(default_factory=list)  # (ref, JSON path, item bound)

    @property
    def payload_path(self) -> str:
        return f"dag.nodes.{self.id}." + ("node." if self.kind == "map" else "") + self.step.payload_key

    def inputs_needed(self) -> set[str]:
        return {str(r.path[0]) for r, _, _ in self.refs if r.root == "input"}


@dataclass
class Graph:
    nodes: dict[str, Node]
    edges: list[tuple[str, str]]
    order: list[str]  # a topological order

    def dependents(self, node_id: str) -> set[str]:
        """Every node downstream of `node_id`, transitively."""
        out: set[str] = set()
        frontier = [node_id]
        while frontier:
            n = frontier.pop()
            for other in self.nodes.values():
                if n in other.deps and other.id not in out:
                    out.add(other.id)
                    frontier.append(other.id)
        return out

    def sinks(self) -> list[str]:
        used = {d for n in self.nodes.values() for d in n.deps}
        return [n for n in self.order if n not in used]

    def inputs_needed(self) -> dict[str, set[str]]:
        """Input name -> the nodes that read it."""
        out: dict[str, set[str]] = {}
        for n in self.nodes.values():
            for name in n.inputs_needed():
                out.setdefault(name, set()).add(n.id)
        return out


def parse(dag: Any, problems: Problems) -> Graph | None:
    """The graph (None when its shape is beyond reading), with `problems` filled; a graph with any problem never
    runs."""
    if not isinstance(dag, Mapping):
        problems.add("_graph", "invalid_type", "'dag' must be an object with 'nodes' and 'edges'.", "dag")
        return None
    raw_nodes = dag.get("nodes")
    items: list[tuple[str, Any, str]] = []
    if isinstance(raw_nodes, Mapping):
        for dup in getattr(raw_nodes, "duplicates", ()):
            problems.add(dup, "duplicate_id", f"Node id '{dup}' appears more than once.", f"dag.nodes.{dup}")
        items = [(str(k), v, f"dag.nodes.{k}") for k, v in raw_nodes.items()]
    elif isinstance(raw_nodes, list):  # also accepted: a list of nodes each naming its `id`
        seen: set[str] = set()
        for i, v in enumerate(raw_nodes):
            nid = v.get("id") if isinstance(v, Mapping) else None
            if not isinstance(nid, str):
                problems.add("_graph", "missing_id", "A node in a list of nodes needs an 'id'.", f"dag.nodes[{i}].id")
                continue
            if nid in seen:
                problems.add(nid, "duplicate_id", f"Node id '{nid}' appears more than once.", f"dag.nodes[{i}].id")
                continue
            seen.add(nid)
            items.append((nid, {k: x for k, x in v.items() if k != "id"}, f"dag.nodes[{i}]"))
    else:
        problems.add("_graph", "invalid_type", "'dag.nodes' must be an object of nodes by id.", "dag.nodes")
        return None
    if not items:
        problems.add("_graph", "empty", "'dag.nodes' has no nodes.", "dag.nodes")
    nodes: dict[str, Node] = {}
    for nid, raw, path in items:
        if not NODE_ID.match(nid):
            problems.add(nid, "invalid_id", "Node ids are 1-64 letters, digits, '_' or '-'.", path)
            continue
        node = _node(nid, raw, path, problems)
        if node is not None:
            nodes[nid] = node
    edges = _edges(dag.get("edges", []), nodes, {nid for nid, _, _ in items}, problems)
    _layout(dag.get("layout"), {nid for nid, _, _ in items}, problems)
    for node in nodes.values():
        _references(node, nodes, {nid for nid, _, _ in items}, problems)
    for a, b in edges:
        if b in nodes:
            nodes[b].deps.add(a)
    order = _order(nodes, problems)
    return Graph(nodes, edges, order)  # with problems too: the catalog checks still report theirs


def _node(nid: str, raw: Any, path: str, problems: Problems) -> Node | None:
    if not isinstance(raw, Mapping):
        problems.add(nid, "invalid_type", "A node must be an object.", path)
        return None
    kind = raw.get("type", "task")
    if kind not in ("task", "map"):
        problems.add(nid, "invalid_value", "'type' is 'task' (the default) or 'map'.", f"{path}.type")
        return None
    allowed = TASK_FIELDS if kind == "task" else MAP_FIELDS
    for k in raw:
        if k not in allowed:
            problems.add(nid, "unknown_field", f"Unknown field '{k}' on a {kind} node (known: "
                         f"{', '.join(sorted(allowed))}).", f"{path}.{k}")
    if kind == "task":
        step = _step(nid, raw, path, problems)
        return Node(nid, "task", step, outputs=step.outputs) if step is not None else None
    inner = raw.get("node")
    if not isinstance(inner, Mapping):
        problems.add(nid, "missing_field", "A map node needs 'node': {model_id, task, payload}.", f"{path}.node")
        return None
    for k in inner:
        if k not in INNER_FIELDS:
            problems.add(nid, "unknown_field", f"Unknown field '{k}' on a map's inner node.", f"{path}.node.{k}")
    step = _step(nid, inner, f"{path}.node", problems)
    items = raw.get("items")
    if not isinstance(items, str) or not items:
        problems.add(nid, "missing_field", "A map node needs 'items': a template resolving to an array, "
                     "e.g. '${input.prompts}'.", f"{path}.items")
        items = None
    else:
        try:
            if whole(items) is None:
                problems.add(nid, "not_an_array", f"'items' must be exactly one template (like '${{input.prompts}}'); "
                             f"'{items}' is a string, not an array.", f"{path}.items")
        except TemplateError as exc:
            problems.add(nid, exc.code, exc.message, f"{path}.items")
    conc = raw.get("max_concurrency", DEFAULT_MAX_CONCURRENCY)
    if isinstance(conc, bool) or not isinstance(conc, int) or conc < 1:
        problems.add(nid, "invalid_value", "'max_concurrency' is an integer of at least 1.", f"{path}.max_concurrency")
        conc = DEFAULT_MAX_CONCURRENCY
    tol = raw.get("tolerance", 0)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol <= 1:
        problems.add(nid, "invalid_value", "'tolerance' is the fraction of items allowed to fail, from 0 to 1.",
                     f"{path}.tolerance")
        tol = 0
    if step is None:
        return None
    if step.cache:
        problems.add(nid, "unsupported_field", "'cache' applies to task nodes, not to a map's items.",
                     f"{path}.node.cache")
    node = Node(nid, "map", step, items=items, max_concurrency=conc, tolerance=float(tol))
    if raw.get("outputs") is not None:  # the map's own: paths into {items, errors}; the inner node's pick each item
        node.outputs = _outputs(nid, raw["outputs"], f"{path}.outputs", problems)
    return node


def _step(nid: str, raw: Mapping[str, Any], path: str, problems: Problems) -> Step | None:
    ok = True
    for name in ("model_id", "task"):
        if not isinstance(raw.get(name), str) or not raw.get(name):
            problems.add(nid, "missing_field", f"'{name}' is required.", f"{path}.{name}")
            ok = False
    if "inputs" in raw and "payload" in raw:
        problems.add(nid, "conflicting_fields", "Give the request as 'inputs' or as 'payload', not both.",
                     f"{path}.payload")
        ok = False
    key = "payload" if "payload" in raw else "inputs"
    payload = raw.get(key, {})
    if not isinstance(payload, Mapping):
        problems.add(nid, "invalid_type", f"'{key}' must be an object (the task's request).", f"{path}.{key}")
        ok = False
    step = Step(model_id=str(raw.get("model_id")), task=str(raw.get("task")),
                payload=dict(payload) if isinstance(payload, Mapping) else {}, payload_key=key)
    if raw.get("outputs") is not None:
        step.outputs = _outputs(nid, raw["outputs"], f"{path}.outputs", problems)
    retry = raw.get("retry")
    if retry is not None:
        if not isinstance(retry, Mapping):
            problems.add(nid, "invalid_type", "'retry' is {max_attempts, backoff_seconds}.", f"{path}.retry")
        else:
            n = retry.get("max_attempts", 3)
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ATTEMPTS_CAP:
                problems.add(nid, "invalid_value", f"'retry.max_attempts' is an integer from 1 to {MAX_ATTEMPTS_CAP}.",
                             f"{path}.retry.max_attempts")
            else:
                step.max_attempts = n
            b = retry.get("backoff_seconds")
            if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b <= 3600):
                problems.add(nid, "invalid_value", "'retry.backoff_seconds' is a number from 0 to 3600.",
                             f"{path}.retry.backoff_seconds")
            elif b is not None:
                step.backoff_seconds = float(b)
            for k in retry:
                if k not in ("max_attempts", "backoff_seconds"):
                    problems.add(nid, "unknown_field", f"Unknown field '{k}' in 'retry'.", f"{path}.retry.{k}")
    t = raw.get("timeout_seconds")
    if t is not None:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= MAX_TIMEOUT:
            problems.add(nid, "invalid_value", f"'timeout_seconds' is a number above 0, at most {MAX_TIMEOUT}.",
                         f"{path}.timeout_seconds")
        else:
            step.timeout_seconds = float(t)
    c = raw.get("cache", False)
    if not isinstance(c, bool):
        problems.add(nid, "invalid_type", "'cache' is true or false.", f"{path}.cache")
    else:
        step.cache = c
    return step if ok else None


def _outputs(nid: str, raw: Any, path: str, problems: Problems) -> list[tuple[str, tuple[str | int, ...]]] | None:
    if not isinstance(raw, list) or not all(isinstance(p, str) and p for p in raw):
        problems.add(nid, "invalid_type", "'outputs' is a list of paths into the result, like 'images[0].url'.", path)
        return None
    out = []
    for i, p in enumerate(raw):
        try:
            out.append((p, parse_path(p if p.startswith("[") else "." + p)))
        except TemplateError as exc:
            problems.add(nid, "invalid_path", exc.message, f"{path}[{i}]")
    return out


def _edges(raw: Any, nodes: dict[str, Node], ids: set[str], problems: Problems) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.add("_graph", "invalid_type", "'dag.edges' is a list of [from, to] pairs or {from, to} objects.",
                     "dag.edges")
        return []
    out = []
    for i, e in enumerate(raw):
        if isinstance(e, list) and len(e) == 2:
            a, b = e
        elif isinstance(e, Mapping) and set(e) == {"from", "to"}:
            a, b = e["from"], e["to"]
        else:
            problems.add("_graph", "invalid_edge", "An edge is [from, to] or {from, to}.", f"dag.edges[{i}]")
            continue
        bad = False
        for end, name in ((a, "from"), (b, "to")):
            if not isinstance(end, str) or end not in ids:
                problems.add(a if isinstance(a, str) and a in ids else "_graph", "unknown_node",
                             f"Edge {i} names node '{end}' ({name}), which the graph does not have.",
                             f"dag.edges[{i}]")
                bad = True
        if not bad:
            out.append((a, b))
    return out


def _layout(raw: Any, ids: set[str], problems: Problems) -> None:
    """`dag.layout`: where an editor drew each node, `{id: {x, y}}`. Runs never read it; it is checked so that what
    is saved is what an editor can draw again."""
    if raw is None:
        return
    if not isinstance(raw, Mapping):
        problems.add("_graph", "invalid_type", "'dag.layout' is an object of positions by node id: {id: {x, y}}.",
                     "dag.layout")
        return
    for nid, pos in raw.items():
        path = f"dag.layout.{nid}"
        if nid not in ids:
            problems.add("_graph", "unknown_node", f"'dag.layout' places node '{nid}', which the graph does not have.",
                         path)
            continue
        ok = isinstance(pos, Mapping) and set(pos) == {"x", "y"} and all(
            isinstance(pos[k], (int, float)) and not isinstance(pos[k], bool) and abs(pos[k]) <= MAX_COORD
            for k in ("x", "y"))
        if not ok:
            problems.add(nid, "invalid_type", f"A node's position is {{x, y}}: two numbers from -{MAX_COORD} to "
                         f"{MAX_COORD}.", path)


def _references(node: Node, nodes: dict[str, Node], ids: set[str], problems: Problems) -> None:
    """Collect the node's references (its dependencies) and check each names something that exists."""
    base = node.payload_path
    sources: list[tuple[Any, str, bool]] = [(node.step.payload, base, node.kind == "map")]
    if node.items is not None:
        sources.append((node.items, f"dag.nodes.{node.id}.items", False))
    for value, path, in_map in sources:
        errors: list[TemplateError] = []
        refs = list(walk(value, path, in_item=in_map, errors=errors))
        for exc in errors:
            problems.add(node.id, exc.code, exc.message, exc.path or path)
        node.refs.extend(refs)
        for ref, where, item_bound in refs:
            if ref.root == "item" and not item_bound:
                problems.add(node.id, "item_outside_map", f"{ref} is only bound inside a map node's payload or a "
                             "$each template.", where)
            elif ref.root == "nodes":
                if ref.node == node.id:
                    problems.add(node.id, "cycle", f"{ref} makes node '{node.id}' depend on itself.", where)
                elif ref.node not in ids:
                    problems.add(node.id, "unknown_node", f"{ref} names node '{ref.node}', which the graph does not "
                                 "have.", where)
                else:
                    node.deps.add(str(ref.node))
    _each_checks(node, node.step.payload, base, problems)


def _each_checks(node: Node, value: Any, path: str, problems: Problems) -> None:
    """`$each` needs one template (an array) and a `template`."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            _each_checks(node, v, f"{path}[{i}]", problems)
    elif isinstance(value, Mapping):
        if EACH in value:
            expr = value[EACH]
            try:
                ok = isinstance(expr, str) and whole(expr) is not None
            except TemplateError:
                ok = True  # reported by the reference walk
            if not ok:
                problems.add(node.id, "not_an_array", f"'$each' must be exactly one template resolving to an array; "
                             f"{expr!r} is not.", f"{path}.{EACH}")
            if "template" not in value:
                problems.add(node.id, "missing_field", "'$each' needs a 'template' to render per element.",
                             f"{path}.template")
            return
        for k, v in value.items():
            _each_checks(node, v, f"{path}.{k}", problems)


def _order(nodes: dict[str, Node], problems: Problems) -> list[str]:
    """Kahn's order; a cycle is reported naming its nodes in order."""
    indeg = {n: len([d for d in node.deps if d in nodes]) for n, node in nodes.items()}
    ready = sorted(n for n, d in indeg.items() if d == 0)
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m, node in sorted(nodes.items()):
            if n in node.deps:
                indeg[m] -= 1
                if indeg[m] == 0:
                    ready.append(m)
    if len(order) < len(nodes):
        left = set(nodes) - set(order)
        cycle = _find_cycle({n: nodes[n].deps & left for n in left})
        if cycle:
            problems.add(cycle[0], "cycle", "The graph has a cycle: " + " -> ".join(cycle + [cycle[0]]) + ".",
                         f"dag.nodes.{cycle[0]}")
    return order


def _find_cycle(deps: dict[str, set[str]]) -> list[str]:
    """One cycle among the nodes left after Kahn's algorithm, in dependency order (a -> b: b reads a)."""
    start = sorted(deps)[0]
    seen: list[str] = []
    n = start
    while n not in seen:
        seen.append(n)
        n = sorted(deps[n])[0]
    cycle = list(reversed(seen[seen.index(n):]))
    first = cycle.index(min(cycle))  # named from its smallest id: the same cycle reads the same every time
    return cycle[first:] + cycle[:first]
