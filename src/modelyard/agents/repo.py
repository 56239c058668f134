"""The agents tables: saved graphs and their versions, runs, their nodes and their event log (the only writer)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..jobs.queue import FINAL as JOB_FINAL
from ..jobs.queue import Job, _job, notify_runners
from ..store import webhook_rows
from ..store.billing_repo import WalletRepo
from ..store.db import Store
from ..store.paging import newest_first
from ..store.tables import agent_run_events, agent_run_nodes, agent_runs, agent_versions, agents, jobs, usage_records

ACTIVE = ("pending", "running", "cancelling")
RUN_FINAL = ("succeeded", "failed", "cancelled")
NODE_FINAL = ("succeeded", "cached", "failed", "skipped", "cancelled")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class Agent:
    id: str
    org_id: str
    name: str
    description: str | None
    version: int
    dag: dict[str, Any]
    created_at: float
    updated_at: float

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "object": "agent", "name": self.name, "description": self.description,
                "version": self.version, "dag": self.dag, "created_at": int(self.created_at),
                "updated_at": int(self.updated_at)}


@dataclass
class Run:
    id: str
    org_id: str
    token_id: str | None
    agent_id: str
    agent_version: int
    status: str
    input_params: dict[str, Any]
    outputs: Any
    error: dict[str, Any] | None
    repair_of: str | None
    idempotency_key: str | None
    base_url: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    webhook_url: str | None
    webhook_status: str | None
    webhook_attempts: int
    driver_token: str | None = None

    @property
    def final(self) -> bool:
        return self.status in RUN_FINAL


@dataclass
class NodeRow:
    run_id: str
    node_id: str
    org_id: str
    kind: str
    state: str
    attempts: int = 0
    inputs: Any = None
    result: Any = None
    error: dict[str, Any] | None = None
    errors: list[dict[str, Any]] | None = None
    total: int | None = None
    done: int | None = None
    failed: int | None = None
    cache_key: str | None = None
    reused_from: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    changed: set[str] = field(default_factory=set, repr=False)  # columns an advance changed

    @property
    def final(self) -> bool:
        return self.state in NODE_FINAL

    def set(self, **values: Any) -> None:
        for k, v in values.items():
            if getattr(self, k) != v:
                setattr(self, k, v)
                self.changed.add(k)

    def row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _NODE_COLUMNS}


_NODE_COLUMNS = [c.name for c in agent_run_nodes.c]
_RUN_FIELDS = [f for f in Run.__dataclass_fields__]


@dataclass
class ItemCounts:
    """A map node's item jobs: how many in each status, and when the first started."""

    by_status: dict[str, int] = field(default_factory=dict)
    started_at: float | None = None

    def count(self, *statuses: str) -> int:
        return sum(self.by_status.get(s, 0) for s in statuses)

    @property
    def queued(self) -> int:
        """Items given a job so far (the next item to queue is this index)."""
        return sum(self.by_status.values())


def _run(m: Mapping[str, Any]) -> Run:
    return Run(**{k: m[k] for k in _RUN_FIELDS})


def _node(m: Mapping[str, Any]) -> NodeRow:
    return NodeRow(**{k: m[k] for k in _NODE_COLUMNS})


def _agent(m: Mapping[str, Any]) -> Agent:
    return Agent(**{k: m[k] for k in Agent.__dataclass_fields__})


class AgentRepo:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    # ---------------------------------------------------------------- agents

    async def create_agent(self, org_id: str, name: str, description: str | None, dag: dict[str, Any]) -> Agent:
        now = time.time()
        agent = Agent(new_id("agent"), org_id, name, description, 1, dag, now, now)
        async with self.engine.begin() as conn:
            await conn.execute(insert(agents).values(**agent.__dict__, deleted_at=None))
            await conn.execute(insert(agent_versions).values(agent_id=agent.id, version=1, name=name, dag=dag,
                                                             created_at=now))
        return agent

    async def get_agent(self, org_id: str, agent_id: str) -> Agent | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(agents).where(agents.c.id == agent_id, agents.c.org_id == org_id,
                                                           agents.c.deleted_at.is_(None)))).first()
        return _agent(row._mapping) if row else None

    async def list_agents(self, org_id: str, limit: int, after: tuple[float, str] | None) -> list[Agent]:
        q = newest_first(select(agents).where(agents.c.org_id == org_id, agents.c.deleted_at.is_(None)), agents,
                         after, limit)
        async with self.engine.connect() as conn:
            return [_agent(r._mapping) for r in (await conn.execute(q)).all()]

    async def update_agent(self, agent: Agent, name: str, description: str | None, dag: dict[str, Any]) -> Agent | None:
        """A new version, unless another update won the race (None: the caller re-reads)."""
        now = time.time()
        async with self.engine.begin() as conn:
            q = (update(agents).where(agents.c.id == agent.id, agents.c.version == agent.version,
                                      agents.c.deleted_at.is_(None))
                 .values(name=name, description=description, dag=dag, version=agent.version + 1, updated_at=now))
            if (await conn.execute(q)).rowcount != 1:
                return None
            await conn.execute(insert(agent_versions).values(agent_id=agent.id, version=agent.version + 1, name=name,
                                                             dag=dag, created_at=now))
        return Agent(agent.id, agent.org_id, name, description, agent.version + 1, dag, agent.created_at, now)

    async def delete_agent(self, org_id: str, agent_id: str) -> bool:
        async with self.engine.begin() as conn:
            q = (update(agents).where(agents.c.id == agent_id, agents.c.org_id == org_id, agents.c.deleted_at.is_(None))
                 .values(deleted_at=time.time()))
            return (await conn.execute(q)).rowcount == 1

    async def version(self, agent_id: str, version: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(agent_versions.c.dag).where(agent_versions.c.agent_id == agent_id,
                                                                         agent_versions.c.version == version))).first()
        return row.dag if row else None

    # ---------------------------------------------------------------- runs

    async def create_run(self, run: Run, nodes: list[NodeRow], job_rows: list[dict[str, Any]],
                         events: list[tuple[str, dict[str, Any]]]) -> Run | None:
        """The run, its nodes, its first jobs and its first events in one transaction. None when the idempotency
        key was taken meanwhile (the caller reads that run)."""
        row = {**run.__dict__, "due_at": time.time(), "driver_expires": None}
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(agent_runs).values(**row))
                await conn.execute(insert(agent_run_nodes), [n.row() for n in nodes])
                await self.insert_jobs(conn, job_rows)
                await self.add_events(conn, run.id, events)
        except Exception:
            if run.idempotency_key and await self.by_key(run.org_id, run.idempotency_key):
                return None
            raise
        return run

    async def insert_jobs(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        if rows:
            await conn.execute(insert(jobs), rows)
            await notify_runners(self.store, conn)  # idle runners everywhere wake at commit

    async def add_events(self, conn: AsyncConnection, run_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        if events:
            now = time.time()
            await conn.execute(insert(agent_run_events), [{"run_id": run_id, "type": t, "data": d, "created_at": now}
                                                          for t, d in events])

    async def by_key(self, org_id: str, key: str) -> Run | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(agent_runs).where(agent_runs.c.org_id == org_id,
                                                               agent_runs.c.idempotency_key == key))).first()
        return _run(row._mapping) if row else None

    async def get_run(self, run_id: str, org_id: str | None = None) -> Run | None:
        q = select(agent_runs).where(agent_runs.c.id == run_id)
        if org_id is not None:
            q = q.where(agent_runs.c.org_id == org_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return _run(row._mapping) if row else None

    async def list_runs(self, org_id: str, *, agent_id: str | None, status: str | None, limit: int,
                        after: tuple[float, str] | None) -> list[Run]:
        q = select(agent_runs).where(agent_runs.c.org_id == org_id)
        if agent_id:
            q = q.where(agent_runs.c.agent_id == agent_id)
        if status:
            q = q.where(agent_runs.c.status == status)
        q = newest_first(q, agent_runs, after, limit)
        async with self.engine.connect() as conn:
            return [_run(r._mapping) for r in (await conn.execute(q)).all()]

    async def nodes(self, run_id: str) -> dict[str, NodeRow]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(agent_run_nodes).where(agent_run_nodes.c.run_id == run_id))).all()
        return {r.node_id: _node(r._mapping) for r in rows}

    async def run_jobs(self, run_id: str, with_results: set[str] = frozenset(),  # type: ignore[assignment]
                       *, final_items: bool = True) -> list[Job]:
        """The run's jobs; results only for the nodes named (a big map's item results are read once, at its end).
        `final_items=False` leaves out map items that have ended (an advance counts those with `item_counts`)."""
        cols = [c for c in jobs.c if c.name != "result"]
        q = select(*cols).where(jobs.c.run_id == run_id)
        if not final_items:
            q = q.where(or_(jobs.c.run_item.is_(None), jobs.c.status.not_in(JOB_FINAL)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
            out = [_job({**r._mapping, "result": None}) for r in rows]
            if with_results:
                res = (await conn.execute(select(jobs.c.id, jobs.c.result).where(
                    jobs.c.run_id == run_id, jobs.c.run_node.in_(sorted(with_results)),
                    jobs.c.status == "completed"))).all()
                by_id = {r.id: r.result for r in res}
                for j in out:
                    if j.id in by_id:
                        j.result = by_id[j.id]
        for j, r in zip(out, rows):
            j.meta["run_item"] = r.run_item
            j.meta["run_node"] = r.run_node
        return out

    async def item_counts(self, run_id: str) -> dict[str, ItemCounts]:
        """Each map node's item jobs by status, and when its first item started: counted in the database, so an
        advance of a big map does not read every item it has run."""
        q = (select(jobs.c.run_node, jobs.c.status, func.count(), func.min(jobs.c.started_at))
             .where(jobs.c.run_id == run_id, jobs.c.run_item.is_not(None)).group_by(jobs.c.run_node, jobs.c.status))
        out: dict[str, ItemCounts] = {}
        async with self.engine.connect() as conn:
            for node, status, n, first in (await conn.execute(q)).all():
                c = out.setdefault(node, ItemCounts())
                c.by_status[status] = int(n)
                if first is not None and (c.started_at is None or first < c.started_at):
                    c.started_at = first
        return out

    async def item_errors(self, run_id: str, node_id: str, statuses: tuple[str, ...]) -> list[dict[str, Any]]:
        """A map's failed items: `{index, error}` in item order."""
        q = (select(jobs.c.run_item, jobs.c.error).where(jobs.c.run_id == run_id, jobs.c.run_node == node_id,
                                                         jobs.c.run_item.is_not(None), jobs.c.status.in_(statuses))
             .order_by(jobs.c.run_item))
        async with self.engine.connect() as conn:
            return [{"index": r.run_item, "error": r.error} for r in (await conn.execute(q)).all()]

    async def results(self, run_id: str, node_id: str) -> dict[int | None, Any]:
        """The stored results of a node's completed jobs, by map item (None for a task node)."""
        q = select(jobs.c.run_item, jobs.c.result).where(jobs.c.run_id == run_id, jobs.c.run_node == node_id,
                                                         jobs.c.status == "completed")
        async with self.engine.connect() as conn:
            return {r.run_item: r.result for r in (await conn.execute(q)).all()}

    async def items(self, run_id: str, node_id: str, after: int, limit: int) -> list[Job]:
        """A map node's items from index `after` on, with their results, in item order."""
        q = (select(jobs).where(jobs.c.run_id == run_id, jobs.c.run_node == node_id, jobs.c.run_item >= after)
             .order_by(jobs.c.run_item).limit(limit))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        out = []
        for r in rows:
            j = _job(r._mapping)
            j.meta["run_item"] = r.run_item
            out.append(j)
        return out

    async def node_started(self, run_id: str, node_id: str, attempt: int) -> bool:
        """A runner began an attempt of a task node: `running`, with its event (once per attempt)."""
        now = time.time()
        n = agent_run_nodes.c
        q = (update(agent_run_nodes).where(n.run_id == run_id, n.node_id == node_id,
                                           or_(n.state.in_(("queued", "retrying")),
                                               and_(n.state == "running", n.attempts < attempt)))
             .values(state="running", attempts=attempt, started_at=func.coalesce(n.started_at, now)))
        async with self.engine.begin() as conn:
            if (await conn.execute(q)).rowcount != 1:
                return False
            started = await conn.execute(update(agent_runs).where(agent_runs.c.id == run_id,
                                                                  agent_runs.c.status == "pending")
                                         .values(status="running", started_at=now))
            events = [("run.started", {})] if started.rowcount == 1 else []  # the run's first node under way
            await self.add_events(conn, run_id, events + [("node.started", {"node": node_id, "attempt": attempt})])
        return True

    async def existing_jobs(self, ids: list[str]) -> set[str]:
        async with self.engine.connect() as conn:
            return {r.id for r in (await conn.execute(select(jobs.c.id).where(jobs.c.id.in_(ids)))).all()}

    async def reserved_unsettled(self, refs: list[str]) -> dict[str, int]:
        """Reservations under these refs that were never released: ref -> amount (see `WalletRepo`)."""
        return await WalletRepo(self.store).reserved_unsettled(refs)

    async def cached(self, org_id: str, key: str) -> NodeRow | None:
        """An earlier succeeded task node of the org with the same model, task and resolved payload."""
        q = (select(agent_run_nodes).where(agent_run_nodes.c.org_id == org_id, agent_run_nodes.c.cache_key == key,
                                           agent_run_nodes.c.state == "succeeded").limit(1))
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return _node(row._mapping) if row else None

    # ---------------------------------------------------------------- the engine's lease on a run

    async def poke(self, run_ids: list[str], now: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(agent_runs).where(agent_runs.c.id.in_(run_ids),
                                                        agent_runs.c.status.in_(ACTIVE)).values(due_at=now))

    async def claim(self, lease: float, recheck: float, limit: int) -> list[Run]:
        """Runs that want looking at and that no engine holds now; each is held for `lease` seconds."""
        now = time.time()
        free = or_(agent_runs.c.driver_expires.is_(None), agent_runs.c.driver_expires < now)
        pick = (select(agent_runs.c.id).where(agent_runs.c.status.in_(ACTIVE), agent_runs.c.due_at <= now, free)
                .order_by(agent_runs.c.due_at).limit(limit).with_for_update(skip_locked=True))
        q = (update(agent_runs).where(agent_runs.c.id.in_(pick.scalar_subquery()), free)
             .values(driver_token=secrets.token_hex(8), driver_expires=now + lease, due_at=now + recheck)
             .returning(*agent_runs.c))
        async with self.engine.begin() as conn:
            return [_run(r._mapping) for r in (await conn.execute(q)).all()]

    async def let_go(self, run: Run) -> bool:
        """Release the run; True when it was poked meanwhile (look again at once)."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(update(agent_runs).where(agent_runs.c.id == run.id,
                                                               agent_runs.c.driver_token == run.driver_token)
                                      .values(driver_token=None, driver_expires=None)
                                      .returning(agent_runs.c.due_at, agent_runs.c.status))).first()
        return bool(row and row.status in ACTIVE and row.due_at is not None and row.due_at <= time.time())

    async def holds(self, conn: AsyncConnection, run: Run) -> bool:
        """Inside an advance's transaction: the lease is still this engine's (else the writes roll back)."""
        q = (update(agent_runs).where(agent_runs.c.id == run.id, agent_runs.c.driver_token == run.driver_token)
             .values(driver_expires=agent_runs.c.driver_expires))
        return (await conn.execute(q)).rowcount == 1

    async def update_run(self, conn: AsyncConnection, run_id: str, **values: Any) -> None:
        await conn.execute(update(agent_runs).where(agent_runs.c.id == run_id).values(**values))

    async def update_node(self, conn: AsyncConnection, node: NodeRow) -> None:
        await conn.execute(update(agent_run_nodes).where(agent_run_nodes.c.run_id == node.run_id,
                                                         agent_run_nodes.c.node_id == node.node_id)
                           .values(**{k: getattr(node, k) for k in node.changed}))

    async def request_cancel(self, run_id: str, org_id: str) -> Run | None:
        now = time.time()
        async with self.engine.begin() as conn:
            await conn.execute(update(agent_runs).where(agent_runs.c.id == run_id, agent_runs.c.org_id == org_id,
                                                        agent_runs.c.status.in_(("pending", "running")))
                               .values(status="cancelling", due_at=now))
        return await self.get_run(run_id, org_id)

    # ---------------------------------------------------------------- reading

    async def events(self, run_id: str, after: int, limit: int = 500) -> list[tuple[int, str, dict[str, Any]]]:
        q = (select(agent_run_events.c.id, agent_run_events.c.type, agent_run_events.c.data)
             .where(agent_run_events.c.run_id == run_id, agent_run_events.c.id > after)
             .order_by(agent_run_events.c.id).limit(limit))
        async with self.engine.connect() as conn:
            return [(int(r.id), r.type, r.data) for r in (await conn.execute(q)).all()]

    async def last_event(self, run_id: str) -> int:
        async with self.engine.connect() as conn:
            v = (await conn.execute(select(func.max(agent_run_events.c.id))
                                    .where(agent_run_events.c.run_id == run_id))).scalar()
        return int(v or 0)

    async def usage(self, run_id: str) -> list[dict[str, Any]]:
        """The run's usage rows (every attempt that reached a model, failed ones at price 0), by node."""
        q = (select(usage_records.c.run_node, usage_records.c.units, usage_records.c.price_micros,
                    usage_records.c.status, usage_records.c.input_tokens, usage_records.c.output_tokens)
             .where(usage_records.c.run_id == run_id))
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(q)).all()]

    # ---------------------------------------------------------------- webhooks

    async def due_webhooks(self, limit: int = 20) -> list[Run]:
        return await webhook_rows.claim_due(self.engine, agent_runs, time.time(), limit, _run)

    async def webhook_done(self, run_id: str, *, delivered: bool, retry_at: float | None) -> None:
        await webhook_rows.mark_done(self.engine, agent_runs, run_id, delivered=delivered, retry_at=retry_at)
