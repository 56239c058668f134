"""Agents and their runs: save, version, validate and run graphs; read runs, cancel, repair, stream their events."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...agents.schema import DOCUMENT_SCHEMA
from ...agents.service import AgentInvalid, AgentService
from ...errors import InvalidRequest, ModelyardError
from ...pipeline import scopes as sc
from ..body import read_body
from ..render import SSE_HEADERS, app_context, base_url, json_response
from ..streaming import EventStream

router = APIRouter(tags=["Agents"])
_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": DOCUMENT_SCHEMA}}}}


def error_body(exc: ModelyardError) -> dict[str, Any]:
    """The platform envelope, plus every problem of a graph by node (`node_errors`) when it has them."""
    kind = "not_found_error" if exc.status == 404 else exc.type
    body: dict[str, Any] = {"error": {"code": exc.code, "message": exc.message, "type": kind, "param": exc.param}}
    if isinstance(exc, AgentInvalid):
        body["node_errors"] = exc.node_errors
    return body


ERRORS = (error_body, ["/api/agents", "/api/runs"])


class _Pairs(dict):
    """A JSON object that remembers keys it saw twice (two nodes with one id would otherwise silently merge)."""

    duplicates: list[str]


def _pairs(items: list[tuple[str, Any]]) -> _Pairs:
    out = _Pairs()
    out.duplicates = []
    for k, v in items:
        if k in out:
            out.duplicates.append(k)
        out[k] = v
    return out


async def _body(request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
    raw = await read_body(request, request.app.state.ctx.settings.max_body_bytes)
    if not raw.strip():
        if empty_ok:
            return {}
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        data = json.loads(raw, object_pairs_hook=_pairs)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data


def _service(request: Request) -> AgentService:
    service = app_context(request).agents
    if service is None:
        raise ModelyardError("Agents are not served by this process.", status=404, code="not_found")
    return service


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequest("'limit' is an integer from 1 to 100.", param="limit")
    return int(raw)


# ---------------------------------------------------------------- documents

@router.get("/api/agents/schema", summary="The JSON Schema of an agent document")
async def agent_schema(request: Request) -> Response:
    return json_response(DOCUMENT_SCHEMA)


@router.post("/api/agents/validate", summary="Check an agent document (and optional input_params) without saving it",
             openapi_extra=_DOC)
async def validate_agent(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    body = await _body(request)
    graph, tasks = _service(request).check(body.get("dag"), principal.plan)
    inputs = body.get("input_params")
    if inputs is not None:
        from ...agents.checks import check_inputs
        from ...agents.dag import Problems

        if not isinstance(inputs, dict):
            raise InvalidRequest("'input_params' must be an object.", param="input_params")
        problems = Problems()
        check_inputs(graph, tasks, ctx.catalog, inputs, problems)
        if problems:
            raise AgentInvalid(problems, "run")
    return json_response({"valid": True, "order": graph.order, "sinks": graph.sinks(),
                          "inputs": sorted(graph.inputs_needed()),
                          "edges": sorted([d, n.id] for n in graph.nodes.values() for d in n.deps)})


@router.post("/api/agents", summary="Create an agent", status_code=201, openapi_extra=_DOC)
async def create_agent(request: Request) -> Response:
    principal = await app_context(request).calls.authorize(request, sc.USER_WRITE)
    agent = await _service(request).create(principal, await _body(request))
    return json_response({"agent": agent.public()}, status=201)


@router.get("/api/agents", summary="List your agents (newest first)")
async def list_agents(request: Request) -> Response:
    principal = await app_context(request).calls.authorize(request, sc.USER_READ)
    rows, more = await _service(request).list(principal, _limit(request), request.query_params.get("after") or None)
    data = [a.public() for a in rows]
    return json_response({"object": "list", "data": data, "has_more": more,
                          "last_id": data[-1]["id"] if data else None})


@router.get("/api/agents/{agent_id}", summary="Get an agent")
async def get_agent(request: Request, agent_id: str) -> Response:
    principal = await app_context(request).calls.authorize(request, sc.USER_READ)
    return json_response({"agent": (await _service(request).get(principal, agent_id)).public()})


@router.patch("/api/agents/{agent_id}", summary="Change an agent (a new version)")
async def update_agent(request: Request, agent_id: str) -> Response:
    principal = await app_context(request).calls.authorize(request, sc.USER_WRITE)
    agent = await _service(request).update(principal, agent_id, await _body(request))
    return json_response({"agent": agent.public()})


@router.delete("/api/agents/{agent_id}", summary="Delete an agent (its runs stay readable)")
async def delete_agent(request: Request, agent_id: str) -> Response:
    principal = await app_context(request).calls.authorize(request, sc.USER_WRITE)
    await _service(request).delete(principal, agent_id)
    return json_response({"id": agent_id, "object": "agent", "deleted": True})


# ---------------------------------------------------------------- runs

@router.post("/api/agents/{agent_id}/run", summary="Run an agent", status_code=201)
async def run_agent(request: Request, agent_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)
    service = _service(request)
    run, replayed = await service.run(principal, agent_id, await _body(request, empty_ok=True),
                                      base_url=base_url(request),
                                      idempotency_key=request.headers.get("idempotency-key"), client=request)
    body = {"run": await service.public(run, nodes=False)}
    return json_response(body, status=200 if replayed else 201,
                         headers={"Idempotent-Replayed": "true"} if replayed else None)


@router.get("/api/runs", summary="List your runs (newest first)")
async def list_runs(request: Request) -> Response:
    principal = await app_context(request).calls.authorize(request, sc.USER_READ)
    q = request.query_params
    service = _service(request)
    rows, more = await service.list_runs(principal, agent_id=q.get("agent_id") or None, status=q.get("status") or None,
                                         limit=_limit(request), after=q.get("after") or None)
    data = [await service.public(r, nodes=False) for r in rows]
    return json_response({"object": "list", "data": data, "has_more": more,
                          "last_id": data[-1]["id"] if data else None})


@router.get("/api/runs/{run_id}", summary="Get a run: every node's state, result and cost")
async def get_run(request: Request, run_id: str) -> Response:
    principal = await app_context(request).calls.authorize(request, sc.USER_READ)
    service = _service(request)
    return json_response({"run": await service.public(await service.get_run(principal, run_id))})


@router.get("/api/agents/{agent_id}/runs/{run_id}", summary="Get a run of this agent")
async def get_agent_run(request: Request, agent_id: str, run_id: str) -> Response:
    principal = await app_context(request).calls.authorize(request, sc.USER_READ)
    service = _service(request)
    return json_response({"run": await service.public(await service.get_run(principal, run_id, agent_id))})


@router.get("/api/runs/{run_id}/nodes/{node_id}/items", summary="A map node's items: state, result or error each")
async def map_items(request: Request, run_id: str, node_id: str) -> Response:
    principal = await app_context(request).calls.authorize(request, sc.USER_READ)
    raw = request.query_params.get("after", "0")
    if not raw.isdigit():
        raise InvalidRequest("'after' is an item index (0 or more).", param="after")
    items, nxt, total = await _service(request).items(principal, run_id, node_id, int(raw), _limit(request))
    return json_response({"object": "list", "data": items, "total": total, "has_more": nxt is not None,
                          "next_after": nxt})


@router.post("/api/runs/{run_id}/cancel", summary="Cancel a run")
async def cancel_run(request: Request, run_id: str) -> Response:
    principal = await app_context(request).calls.authorize(request, sc.USER_WRITE)
    service = _service(request)
    return json_response({"run": await service.public(await service.cancel(principal, run_id), nodes=False)})


@router.post("/api/runs/{run_id}/retry", summary="Repair a run: rerun what failed, reuse what succeeded",
             status_code=201)
async def retry_run(request: Request, run_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)
    service = _service(request)
    run = await service.retry(principal, run_id, await _body(request, empty_ok=True), base_url(request), request)
    return json_response({"run": await service.public(run, nodes=False)}, status=201)


@router.get("/api/runs/{run_id}/events", summary="A run's events (server-sent events; Last-Event-ID resumes)")
async def run_events(request: Request, run_id: str) -> Response:
    principal = await app_context(request).calls.authorize(request, sc.USER_READ)
    service = _service(request)
    run = await service.get_run(principal, run_id)
    last = request.headers.get("last-event-id")
    if last is not None and not last.strip().isdigit():
        raise InvalidRequest("'Last-Event-ID' is the id of an event this stream sent.", param="Last-Event-ID")
    return EventStream(service.events(run, int(last) if last is not None else None), headers=SSE_HEADERS)
