"""The agent engine: wherever runners run, it advances runs — starts each node whose inputs are ready as a job,
reads how its jobs went, ends the run.

One engine holds a run at a time (a short lease in the run's row; any engine takes over after a crash), and every
write of one advance (node states, new jobs, events) is one transaction that counts only while the lease is held.
A node's work is a job like any other (admitted on the call path, leased, retried, settled once per job); its job id
is derived from (run, node, item), so a node can never be queued twice. A job ending pokes its run; every active
run is also looked at every `recheck` seconds, so a run whose poke died with its process still moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..catalog import Model
from ..errors import ModelyardError, NotFound, RateLimited, UpstreamError
from ..jobs.queue import Job, job_row
from ..jobs.loop import passes
from ..jobs.runner import run_task
from ..jobs.tasks import parse_task, signed, validate_payload
from ..pipeline.auth import Principal, org_principal
from ..pipeline.billing import payload_estimate
from ..pipeline.units import Units
from ..store.repo import OrgRepo
from ..types import Task
from . import dag as dagmod
from .repo import RUN_FINAL, AgentRepo, ItemCounts, NodeRow, Run
from .templates import Scope, TemplateError, lookup, render

if TYPE_CHECKING:
    from ..context import AppContext

log = logging.getLogger(__name__)
CLAIM = 16  # runs one engine takes per pass
OK_STATES = ("succeeded", "cached")
BAD_STATES = ("failed", "skipped", "cancelled")
FAILED_JOB = ("failed", "dead_letter", "cancelled")


class LeaseLost(Exception):
    """Another engine holds the run now (this one stalled past its lease): drop this advance's writes."""


def node_job_id(run_id: str, node_id: str, item: int | None) -> str:
    """One job per (run, node, item), ever: an advance repeated after a crash cannot queue the same work twice."""
    return "job_" + hashlib.sha256(f"{run_id}\0{node_id}\0{item}".encode()).hexdigest()[:24]


def node_ref(job_id: str) -> str:
    """The wallet reservation of a node's job, named after it (see `WalletRepo.reserve`)."""
    return "node-" + job_id


def cache_key(model_id: str, task: str, payload: Any) -> str:
    return hashlib.sha256(orjson.dumps([model_id, task, payload], option=orjson.OPT_SORT_KEYS)).hexdigest()


def job_error(exc: ModelyardError) -> dict[str, Any]:
    return {"message": exc.message, "code": exc.code, "type": exc.type, "status": exc.status, "param": exc.param}


def pick(result: Any, outputs: list[tuple[str, tuple[str | int, ...]]] | None) -> Any:
    """What a node shows: its whole result, or `{path: value}` for each of its `outputs` (null where absent)."""
    if outputs is None:
        return result
    out: dict[str, Any] = {}
    for name, path in outputs:
        try:
            out[name] = lookup(result, path, None)  # type: ignore[arg-type]
        except TemplateError:
            out[name] = None
    return out


@dataclass
class Advance:
    """What one advance will write, in one transaction."""

    run: Run
    nodes: dict[str, NodeRow]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    holds: list[dict[str, Any]] = field(default_factory=list)  # released if the transaction does not commit
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    run_values: dict[str, Any] = field(default_factory=dict)
    stop_jobs: list[str] = field(default_factory=list)  # map items to stop once the map has failed

    def event(self, kind: str, **data: Any) -> None:
        self.events.append((kind, data))


class AgentEngine:
    def __init__(self, ctx: AppContext, repo: AgentRepo) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.repo = repo
        self.lease = max(s.job_lease_seconds, 2.0)
        self.poll = s.job_poll_seconds
        self.recheck = max(5 * s.job_poll_seconds, 1.0)
        self.wake = asyncio.Event()
        self.poked: set[str] = set()
        self.orgs = OrgRepo(ctx.store)
        self._graphs: dict[tuple[str, int], dagmod.Graph] = {}
        self._watchers: dict[str, set[asyncio.Event]] = {}  # event streams open in this process, by run

    # ---------------------------------------------------------------- being told

    def poke(self, run_id: str) -> None:
        self.poked.add(run_id)
        self.wake.set()

    def job_changed(self, job: Job) -> None:
        """A JobService listener: a node's job ended or went back to the queue."""
        run_id = job.meta.get("run_id")
        if run_id:
            self.poke(run_id)

    def watch(self, run_id: str) -> asyncio.Event:
        ev = asyncio.Event()
        self._watchers.setdefault(run_id, set()).add(ev)
        return ev

    def unwatch(self, run_id: str, ev: asyncio.Event) -> None:
        evs = self._watchers.get(run_id)
        if evs is not None:
            evs.discard(ev)
            if not evs:
                del self._watchers[run_id]

    def changed(self, run_id: str) -> None:
        for ev in self._watchers.get(run_id, ()):
            ev.set()

    # ---------------------------------------------------------------- the loop

    async def run_forever(self) -> None:
        await passes(self.pass_once, self.wake, self.poll, "agent engine")

    async def pass_once(self) -> None:
        if self.poked:
            ids, self.poked = sorted(self.poked), set()
            await self.repo.poke(ids, time.time())
        for _ in range(100):  # bounded: runs claimed are not due again until poked or rechecked
            claimed = await self.repo.claim(self.lease, self.recheck, CLAIM)
            if not claimed:
                break
            await asyncio.gather(*(self._step(r) for r in claimed))
        await self._webhooks()

    async def _step(self, run: Run) -> None:
        try:
            await self.advance(run)
        except LeaseLost:
            log.warning("run %s: lease lost mid-advance; another engine carries on", run.id)
        except Exception:
            log.exception("run %s: advance failed; retried at its next look", run.id)
        finally:
            with contextlib.suppress(Exception):
                if await self.repo.let_go(run):
                    self.wake.set()

    async def graph(self, agent_id: str, version: int) -> dagmod.Graph:
        key = (agent_id, version)
        g = self._graphs.get(key)
        if g is None:
            doc = await self.repo.version(agent_id, version)
            problems = dagmod.Problems()
            g = dagmod.parse(doc, problems) if doc is not None else None
            if g is None or problems:
                raise NotFound(f"Agent {agent_id} version {version} is gone or no longer valid.")
            if len(self._graphs) > 512:
                self._graphs.clear()
            self._graphs[key] = g
        return g

    async def principal(self, run: Run) -> Principal:
        """Whom nodes are admitted for: the run's org as it is now."""
        return await org_principal(self.orgs, run.org_id, run.token_id)

    # ---------------------------------------------------------------- one advance

    async def advance(self, run: Run) -> None:
        graph = await self.graph(run.agent_id, run.agent_version)
        nodes = await self.repo.nodes(run.id)
        jobs_by_node: dict[str, list[Job]] = {}
        # a map's ended items are counted, not read: reading all of them at every advance made a map of n items
        # cost O(n²) (at 1,000 items an advance took 20 ms at the start, 175 ms at the end, on SQLite)
        for j in await self.repo.run_jobs(run.id, final_items=False):
            jobs_by_node.setdefault(j.meta["run_node"], []).append(j)
        counts = await self.repo.item_counts(run.id)
        adv = Advance(run, nodes)
        for nid in graph.order:
            row = nodes[nid]
            if row.final:
                continue
            if row.kind == "task" and row.state != "pending":
                await self._observe_task(adv, graph.nodes[nid], row, jobs_by_node.get(nid, []))
            elif row.kind == "map" and row.state != "pending":
                await self._observe_map(adv, graph.nodes[nid], row, jobs_by_node.get(nid, []),
                                        counts.get(nid, ItemCounts()))
            if row.state == "pending":
                await self._maybe_start(adv, graph, graph.nodes[nid], row)
        self._finish_run(adv, graph)
        await self._commit(adv)

    async def plan_new(self, run: Run, graph: dagmod.Graph, nodes: dict[str, NodeRow]) -> Advance:
        """A new run's first step (its first jobs), written with the run itself by the service."""
        adv = Advance(run, nodes)
        for nid in graph.order:
            if nodes[nid].state == "pending":
                await self._maybe_start(adv, graph, graph.nodes[nid], nodes[nid])
        self._finish_run(adv, graph)
        return adv

    async def _commit(self, adv: Advance) -> None:
        run = adv.run
        changed = [n for n in adv.nodes.values() if n.changed]
        if not (changed or adv.jobs or adv.events or adv.run_values):
            return
        try:
            async with self.repo.engine.begin() as conn:
                if not await self.repo.holds(conn, run):
                    raise LeaseLost
                for n in changed:
                    await self.repo.update_node(conn, n)
                await self.repo.insert_jobs(conn, adv.jobs)
                if adv.run_values:
                    await self.repo.update_run(conn, run.id, **adv.run_values)
                await self.repo.add_events(conn, run.id, adv.events)
        except BaseException:
            # the reservations stay: each is named after its job, so the advance that writes the job (another
            # engine's now, or this run's next) adopts it, and the run's end refunds any that none took up.
            # Releasing them here would free the money of a job the winning engine has already written and runs.
            raise
        for job_id in adv.stop_jobs:
            with contextlib.suppress(Exception):
                await self.stop_job(job_id, run.org_id)
        if adv.jobs and self.ctx.jobs is not None and self.ctx.jobs.runner is not None:
            self.ctx.jobs.runner.nudge()
        if adv.run_values.get("status") in RUN_FINAL:
            with contextlib.suppress(Exception):  # a later look at the run cannot redo this: log, do not fail
                await self.refund_orphans(run)
        self.changed(run.id)

    async def refund_orphans(self, run: Run) -> None:
        """At a run's end: a reservation made for a node job that was never written (its engine died between
        admitting and committing, and no later advance adopted it) goes back. Its ref names the job, so the
        ledger says which."""
        graph = await self.graph(run.agent_id, run.agent_version)
        nodes = await self.repo.nodes(run.id)
        wanted: dict[str, tuple[str, str]] = {}
        for nid, node in graph.nodes.items():
            items = [None] if node.kind == "task" else list(range(nodes[nid].total or 0))
            for i in items:
                wanted[node_job_id(run.id, nid, i)] = (node.step.model_id, node.step.task)
        missing = set(wanted) - await self.repo.existing_jobs(list(wanted))
        orphans = await self.repo.reserved_unsettled([node_ref(j) for j in sorted(missing)])
        for ref, amount in orphans.items():
            model_id, task = wanted[ref.removeprefix("node-")]
            log.warning("run %s: refunding %d micro-dollars reserved for a node job never written (%s)",
                        run.id, amount, ref)
            await self.ctx.calls.settle_hold({"org_id": run.org_id, "model_id": model_id, "task": task,
                                              "reserved_micros": amount, "ref": ref}, None, ok=False, record=False)

    async def release(self, adv: Advance) -> None:
        """A new run that was never written: its first jobs' reservations go back (no usage row: no call was
        made). Nobody else can adopt them: the run's id, and so its jobs', were this attempt's own."""
        for hold in adv.holds:
            with contextlib.suppress(Exception):
                await self.ctx.calls.settle_hold(hold, None, ok=False, record=False)

    async def stop_job(self, job_id: str, org_id: str) -> None:
        """Cancel a node's job: queued ones at once (refunded), running ones at their next heartbeat."""
        jobs = self.ctx.jobs
        if jobs is None:
            return
        job, outcome = await jobs.queue.cancel(job_id, org_id)
        if job is None:
            return
        if outcome == "cancelled":
            if job.meta.get("hold") is not None:
                await self.ctx.calls.settle_hold(job.meta["hold"], None, ok=False)
                await jobs.queue.settled(job.id)
        elif outcome == "requested" and jobs.runner is not None:
            jobs.runner.cancel_local(job.id)

    # ---------------------------------------------------------------- reading jobs

    async def _observe_task(self, adv: Advance, node: dagmod.Node, row: NodeRow, jobs: list[Job]) -> None:
        if not jobs:
            return
        j = jobs[0]
        row.set(attempts=j.attempts)
        if j.started_at is not None and row.started_at is None:
            row.set(started_at=j.started_at)
        if j.status == "pending":
            if j.attempts > 0 and (row.state != "retrying"):
                row.set(state="retrying", error=j.error)
                adv.event("node.retrying", node=row.node_id, attempt=j.attempts, error=j.error,
                          next_attempt_at=j.run_after)
        elif j.status == "running":
            if row.state != "running":
                row.set(state="running")
                adv.event("node.started", node=row.node_id, attempt=j.attempts)
        elif j.status == "completed":
            result = (await self.repo.results(adv.run.id, row.node_id)).get(None)
            row.set(state="succeeded", result=result, error=None, finished_at=j.finished_at)
            adv.event("node.succeeded", node=row.node_id, attempt=j.attempts,
                      output=self.exposed(adv.run, node, result))
        elif j.status in FAILED_JOB:
            state = "cancelled" if j.status == "cancelled" else "failed"
            row.set(state=state, error=j.error, finished_at=j.finished_at)
            adv.event("node.cancelled" if state == "cancelled" else "node.failed", node=row.node_id,
                      attempt=j.attempts, error=j.error)

    async def _observe_map(self, adv: Advance, node: dagmod.Node, row: NodeRow, active: list[Job],
                           counts: ItemCounts) -> None:
        """`active`: the map's items not ended, read before `counts` (so an item ending between the two reads is
        counted as active, never as a free slot)."""
        total = row.total or 0
        done = counts.count("completed")
        failed = counts.count(*FAILED_JOB)
        allowed = math.floor(node.tolerance * total + 1e-9)
        if row.done != done or row.failed != failed:
            row.set(done=done, failed=failed)
            adv.event("map.progress", node=row.node_id, done=done, failed=failed, total=total)
        if row.state == "cancelled":
            return
        if counts.started_at is not None and row.started_at is None:
            row.set(started_at=counts.started_at)
        over = failed > allowed
        if over or done + failed == total:
            results = await self.repo.results(adv.run.id, row.node_id)
            errors = await self.repo.item_errors(adv.run.id, row.node_id, FAILED_JOB)
            items = [results.get(i) for i in range(total)]
            result = {"items": items, "errors": errors}
            if over:
                err = {"code": "tolerance_exceeded", "type": "invalid_request_error", "status": 400, "param": None,
                       "message": f"{failed} of {total} items failed; tolerance {node.tolerance:g} allows {allowed}."}
                row.set(state="failed", result=result, errors=errors, error=err, finished_at=time.time())
                adv.stop_jobs.extend(j.id for j in active)
                adv.event("node.failed", node=row.node_id, error=err, errors=errors)
            else:
                row.set(state="succeeded", result=result, errors=errors, error=None, finished_at=time.time())
                adv.event("node.succeeded", node=row.node_id, output=self.exposed(adv.run, node, result))
            return
        if adv.run.status == "cancelling":
            return
        started = counts.queued
        room = node.max_concurrency - len(active)
        if room > 0 and started < total:
            principal = await self.principal(adv.run)
            model, task = self._model(node)
            scope = self._scope(adv, row)
            for i in range(started, min(total, started + room)):
                await self._queue_item(adv, principal, node, row, model, task, scope, i)

    # ---------------------------------------------------------------- starting nodes

    async def _maybe_start(self, adv: Advance, graph: dagmod.Graph, node: dagmod.Node, row: NodeRow) -> None:
        states = {d: adv.nodes[d].state for d in node.deps}
        if adv.run.status == "cancelling":
            row.set(state="cancelled", finished_at=time.time())
            adv.event("node.cancelled", node=row.node_id, error=None)
            return
        bad = sorted(d for d, s in states.items() if s in BAD_STATES)
        if bad:
            row.set(state="skipped", finished_at=time.time(),
                    error={"code": "upstream_failed", "message": f"Skipped: node '{bad[0]}' {states[bad[0]]}.",
                           "type": "invalid_request_error", "status": 424, "param": None})
            adv.event("node.skipped", node=row.node_id, reason=row.error["message"])  # type: ignore[index]
            return
        if not all(s in OK_STATES for s in states.values()):
            return
        scope = self._scope(adv, row)
        try:
            model, task = self._model(node)
        except ModelyardError as exc:
            return self._fail(adv, row, job_error(exc))
        principal = await self.principal(adv.run)
        if node.kind == "map":
            try:
                items = render(node.items, scope)
            except TemplateError as exc:
                return self._fail(adv, row, _template_error(exc, f"dag.nodes.{node.id}.items"))
            if not isinstance(items, list):
                return self._fail(adv, row, {"code": "not_an_array", "type": "invalid_request_error", "status": 400,
                                             "param": f"dag.nodes.{node.id}.items", "message":
                                             f"'items' {node.items} resolved to {type(items).__name__}, not an array."})
            row.set(state="running", inputs={"items": items}, total=len(items), done=0, failed=0)
            adv.event("node.started", node=row.node_id, total=len(items))
            if not items:
                row.set(state="succeeded", result={"items": [], "errors": []}, errors=[], finished_at=time.time())
                adv.event("node.succeeded", node=row.node_id, output=self.exposed(adv.run, node, row.result))
                return
            for i in range(min(len(items), node.max_concurrency)):
                await self._queue_item(adv, principal, node, row, model, task, scope, i)
            return
        try:
            payload = render(node.step.payload, scope)
        except TemplateError as exc:
            return self._fail(adv, row, _template_error(exc, node.payload_path))
        row.set(inputs=payload)
        if node.step.cache:
            key = cache_key(model.id, task.value, payload)
            row.set(cache_key=key)
            hit = await self.repo.cached(adv.run.org_id, key)
            if hit is not None:
                row.set(state="cached", result=hit.result, reused_from=hit.run_id, finished_at=time.time())
                adv.event("node.succeeded", node=row.node_id, cached=True, reused_from=hit.run_id,
                          output=self.exposed(adv.run, node, hit.result))
                return
        await self._queue(adv, principal, node, row, model, task, payload, None)

    async def _queue_item(self, adv: Advance, principal: Principal, node: dagmod.Node, row: NodeRow, model: Model,
                          task: Task, scope: Scope, i: int) -> None:
        """Item `i` of a map: its payload rendered with `${item}` bound; one that does not render is a failed item
        with its reason."""
        try:
            payload = render(node.step.payload, scope.with_item(row.inputs["items"][i]))
        except TemplateError as exc:
            adv.jobs.append(self._failed_row(adv.run, node, i, _template_error(exc, node.payload_path)))
            return
        await self._queue(adv, principal, node, row, model, task, payload, i)

    def _model(self, node: dagmod.Node) -> tuple[Model, Task]:
        task = parse_task(node.step.task)
        return self.ctx.router.resolve(node.step.model_id, task), task

    def _scope(self, adv: Advance, row: NodeRow) -> Scope:
        base = self.base_url(adv.run)
        results = {nid: signed(n.result, self.ctx.media, base) for nid, n in adv.nodes.items() if n.state in OK_STATES}
        return Scope(adv.run.input_params, results)

    def _fail(self, adv: Advance, row: NodeRow, error: dict[str, Any]) -> None:
        row.set(state="failed", error=error, finished_at=time.time())
        adv.event("node.failed", node=row.node_id, error=error)

    async def _queue(self, adv: Advance, principal: Principal, node: dagmod.Node, row: NodeRow, model: Model,
                     task: Task, payload: dict[str, Any], item: int | None) -> None:
        """Admit one unit of the node's work on the call path and add its job; a refusal (a payload the task's
        schema rejects, a wallet that cannot cover it, the content filter) fails the node or the item, visibly."""
        run = adv.run
        prefix = node.payload_path + "."
        job_id = node_job_id(run.id, node.id, item)
        try:
            validate_payload(task, payload, model.id, prefix)
            estimate = payload_estimate(task, payload)
            # the reservation is named after the job: admitting it again after a crash adopts it, never leaks it
            call = await self.ctx.calls.admit(principal, model, task, payload, job=True, estimate=estimate,
                                              field_prefix=prefix, count=False, ref=node_ref(job_id),
                                              dialect="agents")
        except RateLimited as exc:  # the plan's limits for this kind of work: wait, it is tried again later
            if item is None:  # shown on the pending node until it is queued
                row.set(error=job_error(exc))
            return
        except ModelyardError as exc:
            if item is None:
                return self._fail(adv, row, job_error(exc))
            adv.jobs.append(self._failed_row(run, node, item, job_error(exc)))
            return
        hold = {**call.hold(), "job_id": job_id, "run_id": run.id, "run_node": node.id}
        adv.holds.append(hold)
        meta: dict[str, Any] = {"face": "agents", "base_url": run.base_url, "hold": hold, "executor": "agent_node",
                                "run_id": run.id, "node": node.id, "item": item,
                                "timeout_seconds": node.step.timeout_seconds,
                                "backoff_seconds": node.step.backoff_seconds}
        meta["units" if estimate.mode else "estimate"] = asdict(estimate)
        if self.ctx.tracing is not None:  # started inside a request (the run's creation): its trace continues
            trace = self.ctx.tracing.traceparent()
            if trace:
                meta["trace"] = trace
        adv.jobs.append(job_row(org_id=run.org_id, token_id=run.token_id, model=model.id, task=task.value,
                                payload=payload, meta=meta, job_id=job_id, now=time.time(),
                                max_attempts=node.step.max_attempts or self.ctx.settings.job_max_attempts,
                                run_id=run.id, run_node=node.id, run_item=item))
        if item is None:
            row.set(state="queued", error=None)
            adv.event("node.queued", node=row.node_id)

    def _failed_row(self, run: Run, node: dagmod.Node, item: int, error: dict[str, Any]) -> dict[str, Any]:
        """A map item refused before it ran: a failed job row, so the map counts it like any failed item."""
        return job_row(org_id=run.org_id, token_id=run.token_id, model=node.step.model_id, task=node.step.task,
                       payload={}, meta={"face": "agents", "run_id": run.id, "node": node.id, "item": item},
                       job_id=node_job_id(run.id, node.id, item), now=time.time(), status="failed", error=error,
                       run_id=run.id, run_node=node.id, run_item=item)

    # ---------------------------------------------------------------- ending the run

    def _finish_run(self, adv: Advance, graph: dagmod.Graph) -> None:
        run, nodes = adv.run, adv.nodes
        values: dict[str, Any] = {}
        if run.status == "pending" and any(n.state != "pending" for n in nodes.values()) and \
                any(n.state not in ("pending", "queued") for n in nodes.values()):
            values.update(status="running", started_at=time.time())
            adv.event("run.started")
        if all(n.final for n in nodes.values()):
            if run.status == "cancelling":
                status = "cancelled"
            elif all(n.state in OK_STATES for n in nodes.values()):
                status = "succeeded"
            else:
                status = "failed"
            # stored whole (media as file names); shown through each sink's `outputs`, with fresh links, when read
            outputs = {nid: nodes[nid].result for nid in graph.sinks() if nodes[nid].state in OK_STATES}
            error = None
            if status == "failed":
                first = next(nid for nid in graph.order if nodes[nid].state == "failed")
                err = nodes[first].error or {}
                error = {"code": "node_failed", "node": first, "message": f"Node '{first}' failed: "
                         f"{err.get('message', 'no reason given')}", "node_error": err}
            now = time.time()
            values.update(status=status, outputs=outputs, error=error, finished_at=now, due_at=None)
            if run.started_at is None and "started_at" not in values:
                values["started_at"] = now
            if run.webhook_url:
                values.update(webhook_status="pending", webhook_next_at=now)
            adv.event("run.completed", status=status, error=error, outputs=self.outputs(run, graph, outputs))
        if values:
            adv.run_values.update(values)
            for k, v in values.items():
                if hasattr(run, k):
                    setattr(run, k, v)

    # ---------------------------------------------------------------- rendering

    def base_url(self, run: Run) -> str:
        return self.ctx.settings.public_url or run.base_url or "http://localhost/"

    def outputs(self, run: Run, graph: dagmod.Graph, outputs: Any) -> Any:
        """The run's outputs as clients see them: each sink's result through its `outputs`, links signed now."""
        if not isinstance(outputs, dict):
            return outputs
        return {nid: self.exposed(run, graph.nodes[nid], r) if nid in graph.nodes else r for nid, r in outputs.items()}

    def exposed(self, run: Run, node: dagmod.Node, result: Any) -> Any:
        shown = signed(result, self.ctx.media, self.base_url(run))
        if node.kind == "map" and node.step.outputs is not None and isinstance(shown, dict):
            shown = {**shown, "items": [pick(i, node.step.outputs) if i is not None else None
                                        for i in shown.get("items") or []]}
        return pick(shown, node.outputs)

    # ---------------------------------------------------------------- a node's job, on a runner

    async def execute(self, job: Job) -> tuple[Any, Units, Any]:
        """The runner's work on a node's job: say it started (task nodes), then run it as any job, in its time."""
        if job.meta.get("item") is None:
            if await self.repo.node_started(job.meta["run_id"], job.meta["node"], job.attempts):
                self.changed(job.meta["run_id"])
        timeout = job.meta.get("timeout_seconds")
        if not timeout:
            return await run_task(self.ctx, job)
        try:
            return await asyncio.wait_for(run_task(self.ctx, job), timeout)
        except asyncio.TimeoutError:
            raise UpstreamError(f"The node did not finish within its timeout_seconds ({timeout:g}s).",
                                code="timeout", status=504) from None

    # ---------------------------------------------------------------- webhooks

    async def _webhooks(self) -> None:
        jobs = self.ctx.jobs
        if jobs is None:
            return
        for run in await self.repo.due_webhooks():
            graph = await self.graph(run.agent_id, run.agent_version)
            body = {"type": "run.completed", "run_id": run.id, "agent_id": run.agent_id, "status": run.status,
                    "outputs": self.outputs(run, graph, run.outputs), "error": run.error,
                    "finished_at": int(run.finished_at) if run.finished_at else None}
            ok, permanent = await jobs.webhooks.send(run.org_id, f"msg_{run.id}", run.webhook_url or "",
                                                     orjson.dumps(body))
            await self.repo.webhook_done(run.id, delivered=ok,
                                         retry_at=jobs.webhooks.retry_at(run.webhook_attempts, ok, permanent))


def _template_error(exc: TemplateError, path: str) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, "type": "invalid_request_error", "status": 400, "param": path}

