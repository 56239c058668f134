"""The agent service the routes call: save and version graphs, validate, start runs, read, cancel and repair them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Mapping

import orjson

from ..errors import InvalidRequest, ModelyardError, NotFound
from ..net import check_url
from ..pipeline.auth import Principal
from ..pipeline.calls import Client
from . import dag as dagmod
from .checks import check_inputs, check_models
from .engine import AgentEngine, pick
from .repo import ACTIVE, RUN_FINAL, Agent, AgentRepo, NodeRow, Run, new_id
from ..jobs.queue import usage_sum as _usage_sum
from ..jobs.tasks import signed

if TYPE_CHECKING:
    from ..context import AppContext

RUN_STATUSES = ("pending", "running", "succeeded", "failed", "cancelling", "cancelled")
MAX_NAME = 200
MAX_DESCRIPTION = 2000


class AgentInvalid(InvalidRequest):
    """A graph (or a run's inputs) with problems: every one of them, by node."""

    code = "invalid_agent"

    def __init__(self, problems: dagmod.Problems, what: str = "agent") -> None:
        first = problems.first()
        n = problems.count()
        more = f" ({n - 1} more problem(s) in node_errors)" if n > 1 else ""
        super().__init__(f"The {what} is not valid: {first.message}{more}", param=first.path)
        self.node_errors = problems.public()


class AgentService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.repo = AgentRepo(ctx.store)
        self.engine = AgentEngine(ctx, self.repo)
        self._task: asyncio.Task[None] | None = None
        if ctx.jobs is not None:  # runners here run node jobs, and a node's job ending pokes its run
            ctx.jobs.executors["agent_node"] = self.engine.execute
            ctx.jobs.listeners.append(self.engine.job_changed)

    def start(self) -> None:
        self._task = asyncio.create_task(self.engine.run_forever())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ---------------------------------------------------------------- documents

    def check(self, dag: Any, plan: str) -> tuple[dagmod.Graph, dict[str, Any]]:
        """The graph, checked whole against the catalog and the caller's plan; raises AgentInvalid with every
        problem."""
        problems = dagmod.Problems()
        graph = dagmod.parse(dag, problems)
        tasks: dict[str, Any] = {}
        if graph is not None:
            tasks = check_models(graph, self.ctx.catalog, problems,
                                 lambda model_id: self.ctx.gate.plan_allows(plan, model_id))
        if problems or graph is None:
            raise AgentInvalid(problems)
        return graph, tasks

    async def create(self, principal: Principal, body: Mapping[str, Any]) -> Agent:
        name, description = _name(body, required=True), _description(body)
        self.check(body.get("dag"), principal.plan)
        return await self.repo.create_agent(principal.org_id, name, description, _plain(body["dag"]))

    async def get(self, principal: Principal, agent_id: str) -> Agent:
        agent = await self.repo.get_agent(principal.org_id, agent_id)
        if agent is None:
            raise NotFound(f"No agent '{agent_id}'.", param="id", code="agent_not_found")
        return agent

    async def list(self, principal: Principal, limit: int, after: str | None) -> tuple[list[Agent], bool]:
        cursor = None
        if after:
            last = await self.repo.get_agent(principal.org_id, after)
            if last is None:
                raise InvalidRequest(f"'after' names no agent of yours: '{after}'.", param="after")
            cursor = (last.created_at, last.id)
        rows = await self.repo.list_agents(principal.org_id, limit + 1, cursor)
        return rows[:limit], len(rows) > limit

    async def update(self, principal: Principal, agent_id: str, body: Mapping[str, Any]) -> Agent:
        for _ in range(5):  # a concurrent update wins its version; this one re-reads and applies on top
            agent = await self.get(principal, agent_id)
            name = _name(body, required=False) or agent.name
            description = _description(body) if "description" in body else agent.description
            dag = agent.dag
            if "dag" in body:
                self.check(body["dag"], principal.plan)
                dag = _plain(body["dag"])
            if name == agent.name and description == agent.description and dag == agent.dag:
                return agent  # nothing changed: no new version
            updated = await self.repo.update_agent(agent, name, description, dag)
            if updated is not None:
                return updated
        raise ModelyardError("The agent is being changed by someone else; try again.", status=409, code="conflict")

    async def delete(self, principal: Principal, agent_id: str) -> None:
        if not await self.repo.delete_agent(principal.org_id, agent_id):
            raise NotFound(f"No agent '{agent_id}'.", param="id", code="agent_not_found")

    # ---------------------------------------------------------------- runs

    async def run(self, principal: Principal, agent_id: str, body: Mapping[str, Any], *, base_url: str,
                  idempotency_key: str | None, client: Client | None) -> tuple[Run, bool]:
        """Check the inputs, then write the run with its first jobs in one transaction. (run, replayed)."""
        agent = await self.get(principal, agent_id)
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 200:
                raise InvalidRequest("'Idempotency-Key' is 1 to 200 characters.", param="Idempotency-Key")
            found = await self.repo.by_key(principal.org_id, idempotency_key)
            if found is not None:
                return found, True
        inputs = body.get("input_params", {})
        if not isinstance(inputs, Mapping):
            raise InvalidRequest("'input_params' must be an object.", param="input_params")
        webhook = body.get("webhook_url")
        if webhook is not None:
            if not isinstance(webhook, str):
                raise InvalidRequest("'webhook_url' must be a string.", param="webhook_url")
            await check_url(webhook, "webhook_url", allow_private=self.ctx.settings.allow_private_urls)
        graph, tasks = self.check(agent.dag, principal.plan)
        problems = dagmod.Problems()
        check_inputs(graph, tasks, self.ctx.catalog, inputs, problems)
        if problems:
            raise AgentInvalid(problems, "run")
        await self.ctx.calls.count_submission(principal, client)
        now = time.time()
        run = Run(id=new_id("run"), org_id=principal.org_id, token_id=principal.token_id or None, agent_id=agent.id,
                  agent_version=agent.version, status="pending", input_params=_plain(inputs), outputs=None,
                  error=None, repair_of=None, idempotency_key=idempotency_key, base_url=base_url, created_at=now,
                  started_at=None, finished_at=None, webhook_url=webhook, webhook_status=None, webhook_attempts=0)
        nodes = {nid: NodeRow(run.id, nid, run.org_id, n.kind, "pending") for nid, n in graph.nodes.items()}
        return await self._start(run, graph, nodes), False

    async def _start(self, run: Run, graph: dagmod.Graph, nodes: dict[str, NodeRow]) -> Run:
        adv = await self.engine.plan_new(run, graph, nodes)
        events = [("run.created", {"agent_id": run.agent_id, "agent_version": run.agent_version})] + adv.events
        try:
            created = await self.repo.create_run(adv.run, list(nodes.values()), adv.jobs, events)
        except BaseException:
            await self.engine.release(adv)
            raise
        if created is None:  # the same Idempotency-Key won a race: that run is the answer
            await self.engine.release(adv)
            found = await self.repo.by_key(run.org_id, run.idempotency_key or "")
            assert found is not None
            return found
        if adv.run_values:
            await self._finish_new(run, adv.run_values)
        if adv.jobs and self.ctx.jobs is not None and self.ctx.jobs.runner is not None:
            self.ctx.jobs.runner.nudge()
        self.engine.poke(run.id)
        return run

    async def _finish_new(self, run: Run, values: dict[str, Any]) -> None:
        """A run whose every node ended while planning (all cached, or refused): its final state, written now."""
        async with self.repo.engine.begin() as conn:
            await self.repo.update_run(conn, run.id, **values)

    async def get_run(self, principal: Principal, run_id: str, agent_id: str | None = None) -> Run:
        run = await self.repo.get_run(run_id, principal.org_id)
        if run is None or (agent_id is not None and run.agent_id != agent_id):
            raise NotFound(f"No run '{run_id}'.", param="id", code="run_not_found")
        return run

    async def list_runs(self, principal: Principal, *, agent_id: str | None, status: str | None, limit: int,
                        after: str | None) -> tuple[list[Run], bool]:
        if status is not None and status not in RUN_STATUSES:
            raise InvalidRequest(f"'status' is one of {', '.join(RUN_STATUSES)}.", param="status")
        cursor = None
        if after:
            last = await self.repo.get_run(after, principal.org_id)
            if last is None:
                raise InvalidRequest(f"'after' names no run of yours: '{after}'.", param="after")
            cursor = (last.created_at, last.id)
        rows = await self.repo.list_runs(principal.org_id, agent_id=agent_id, status=status, limit=limit + 1,
                                         after=cursor)
        return rows[:limit], len(rows) > limit

    async def cancel(self, principal: Principal, run_id: str) -> Run:
        """`cancelling` at once: queued nodes dropped now, running ones stopped at their next heartbeat; the run is
        `cancelled` when nothing of it runs. A finished run is a 409 and stays as it is."""
        run = await self.get_run(principal, run_id)
        if run.final:
            raise ModelyardError(f"Cannot cancel a run with status '{run.status}'.", param="id",
                                 code="run_not_cancellable", status=409)
        run = await self.repo.request_cancel(run.id, principal.org_id) or run
        for job in await self.repo.run_jobs(run.id):
            if not job.final:
                await self.engine.stop_job(job.id, run.org_id)
        self.engine.poke(run.id)
        return run

    async def retry(self, principal: Principal, run_id: str, body: Mapping[str, Any], base_url: str,
                    client: Client | None) -> Run:
        """A repair run: failed, cancelled and skipped nodes (and what depends on them) run again; every node that
        succeeded keeps its output. `failed_only: false` runs the whole graph again with the same inputs."""
        original = await self.get_run(principal, run_id)
        if not original.final:
            raise ModelyardError(f"Run '{run_id}' is still {original.status}; retry it once it has ended.",
                                 param="id", code="run_not_final", status=409)
        failed_only = body.get("failed_only", True)
        if not isinstance(failed_only, bool):
            raise InvalidRequest("'failed_only' is true or false.", param="failed_only")
        graph = await self.engine.graph(original.agent_id, original.agent_version)
        old = await self.repo.nodes(original.id)
        rerun: set[str] = set(graph.nodes)
        if failed_only:
            rerun = {nid for nid, n in old.items() if n.state not in ("succeeded", "cached")}
            for nid in list(rerun):
                rerun |= graph.dependents(nid)
        if not rerun:
            raise ModelyardError(f"Run '{run_id}' has no failed or cancelled node to run again.", param="failed_only",
                                 code="nothing_to_retry", status=409)
        await self.ctx.calls.count_submission(principal, client)
        now = time.time()
        run = Run(id=new_id("run"), org_id=original.org_id, token_id=principal.token_id or None,
                  agent_id=original.agent_id, agent_version=original.agent_version, status="pending",
                  input_params=original.input_params, outputs=None, error=None, repair_of=original.id,
                  idempotency_key=None, base_url=base_url, created_at=now, started_at=None, finished_at=None,
                  webhook_url=original.webhook_url, webhook_status=None, webhook_attempts=0)
        nodes: dict[str, NodeRow] = {}
        for nid, n in graph.nodes.items():
            if nid in rerun:
                nodes[nid] = NodeRow(run.id, nid, run.org_id, n.kind, "pending")
            else:
                prev = old[nid]
                nodes[nid] = NodeRow(run.id, nid, run.org_id, n.kind, "succeeded", attempts=0, inputs=prev.inputs,
                                     result=prev.result, errors=prev.errors, total=prev.total, done=prev.done,
                                     failed=prev.failed, reused_from=original.id, started_at=prev.started_at,
                                     finished_at=prev.finished_at)
        return await self._start(run, graph, nodes)

    # ---------------------------------------------------------------- views

    def base_url(self, run: Run) -> str:
        return self.engine.base_url(run)

    async def public(self, run: Run, *, nodes: bool = True) -> dict[str, Any]:
        """The run as clients read it: per-node state, timings, inputs, results (signed links), progress, cost."""
        base = self.base_url(run)
        graph = await self.engine.graph(run.agent_id, run.agent_version)
        body: dict[str, Any] = {
            "id": run.id, "object": "agent.run", "agent_id": run.agent_id, "agent_version": run.agent_version,
            "status": run.status, "input_params": run.input_params,
            "outputs": self.engine.outputs(run, graph, run.outputs), "error": run.error, "repair_of": run.repair_of,
            "created_at": int(run.created_at), "started_at": _int(run.started_at),
            "finished_at": _int(run.finished_at)}
        if not nodes:
            return body
        rows = await self.repo.nodes(run.id)
        usage = await self.repo.usage(run.id)
        by_node: dict[str, dict[str, Any]] = {}
        total = _usage_sum(usage)
        for r in usage:
            by_node.setdefault(r["run_node"], []).append(r)  # type: ignore[arg-type]
        run_jobs = await self.repo.run_jobs(run.id)
        jobs = {j.meta["run_node"]: j for j in run_jobs if j.meta.get("run_item") is None}
        total["attempts"] = sum(j.attempts for j in run_jobs)  # retries included: each time a runner took one up
        out = {}
        for nid in graph.order:
            row, node = rows[nid], graph.nodes[nid]
            view: dict[str, Any] = {
                "id": nid, "type": row.kind, "model_id": node.step.model_id, "task": node.step.task,
                "depends_on": sorted(node.deps), "state": row.state, "attempts": row.attempts, "started_at": _int(row.started_at),
                "finished_at": _int(row.finished_at), "inputs": signed(row.inputs, self.ctx.media, base),
                "result": self.engine.exposed(run, node, row.result) if row.result is not None else None,
                "error": row.error, "reused_from": row.reused_from,
                "usage": _usage_sum(by_node.get(nid, []))}  # type: ignore[arg-type]
            if row.kind == "map":
                view["progress"] = {"done": row.done or 0, "failed": row.failed or 0, "total": row.total}
                view["errors"] = row.errors or []
                view["max_concurrency"], view["tolerance"] = node.max_concurrency, node.tolerance
            elif nid in jobs:
                view["job_id"] = jobs[nid].id
            out[nid] = view
        body["nodes"] = out
        body["usage"] = total
        body["cost_micros"] = total["cost_micros"]
        return body

    async def items(self, principal: Principal, run_id: str, node_id: str, after: int, limit: int
                    ) -> tuple[list[dict[str, Any]], int | None, int]:
        """A map node's items as they stand now — each result as soon as it is ready. (items, next index, total)"""
        run = await self.get_run(principal, run_id)
        graph = await self.engine.graph(run.agent_id, run.agent_version)
        node = graph.nodes.get(node_id)
        if node is None or node.kind != "map":
            raise NotFound(f"Run '{run_id}' has no map node '{node_id}'.", param="node_id", code="node_not_found")
        row = (await self.repo.nodes(run.id))[node_id]
        base = self.base_url(run)
        out = []
        for j in await self.repo.items(run.id, node_id, after, limit + 1):
            i = j.meta["run_item"]
            state = {"pending": "retrying" if j.attempts else "queued", "completed": "succeeded",
                     "dead_letter": "failed"}.get(j.status, j.status)
            out.append({"index": i, "state": state, "attempts": j.attempts, "job_id": j.id,
                        "item": (row.inputs or {}).get("items", [None] * (i + 1))[i],
                        "result": pick(signed(j.result, self.ctx.media, base), node.step.outputs)
                        if j.status == "completed" else None,
                        "error": j.error if j.status in ("failed", "dead_letter", "cancelled") else None,
                        "started_at": _int(j.started_at), "finished_at": _int(j.finished_at)})
        more = len(out) > limit
        out = out[:limit]
        return out, (out[-1]["index"] + 1 if more else None), row.total or 0

    async def events(self, run: Run, last_id: int | None, *, poll: float = 0.5) -> AsyncIterator[bytes]:
        """Server-sent events: a snapshot on connect (unless resuming), then each event once, in order, ending
        after `run.completed`. Ids are the event log's, so `Last-Event-ID` resumes exactly where a client left."""
        after = last_id or 0
        watch = self.engine.watch(run.id)
        try:
            if last_id is None:
                after = await self.repo.last_event(run.id)
                fresh = await self.repo.get_run(run.id) or run
                yield _sse(after, "snapshot", await self.public(fresh))
                if fresh.final:
                    return
            while True:
                watch.clear()
                events = await self.repo.events(run.id, after)
                for eid, kind, data in events:
                    after = eid
                    yield _sse(eid, kind, {"run_id": run.id, **data})
                    if kind == "run.completed":
                        return
                if not events:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(watch.wait(), poll)
        finally:
            self.engine.unwatch(run.id, watch)


def _sse(eid: int, kind: str, data: Any) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (eid, kind.encode(), orjson.dumps(data))


def _int(v: float | None) -> int | None:
    return int(v) if v is not None else None


def _plain(value: Any) -> Any:
    """JSON as plain dicts and lists (the body parser's duplicate-key bookkeeping is not stored)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _name(body: Mapping[str, Any], *, required: bool) -> str | None:
    name = body.get("name")
    if name is None and not required:
        return None
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise InvalidRequest(f"'name' is a non-empty string of at most {MAX_NAME} characters.", param="name")
    return name


def _description(body: Mapping[str, Any]) -> str | None:
    d = body.get("description")
    if d is not None and (not isinstance(d, str) or len(d) > MAX_DESCRIPTION):
        raise InvalidRequest(f"'description' is a string of at most {MAX_DESCRIPTION} characters.",
                             param="description")
    return d


__all__ = ["AgentService", "AgentInvalid", "ACTIVE", "RUN_FINAL"]
