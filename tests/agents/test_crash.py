"""Agent runs survive SIGKILLed runners: every run ends, no node runs, completes or is charged twice; a lost lease fails."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
import yaml
from sqlalchemy import select

from modelyard.agents.service import AgentService
from modelyard.catalog import build_catalog
from modelyard.config import load_settings
from modelyard.jobs.standalone import runner_context
from modelyard.pipeline.auth import Principal
from modelyard.routing import Router
from modelyard.store.billing_repo import WalletRepo
from modelyard.store.db import Store
from modelyard.store.repo import OrgRepo
from modelyard.store.tables import agent_run_events, agent_run_nodes, agent_runs, jobs, usage_records, wallet_ledger

from ..support.jobs import FAST, job_models
from ..support.processes import RunnerProcesses
from ..support.waiting import wait_until

# echo prices (micro-dollars): per token in and out plus one per call. The reservation prices the payload's size and
# max_tokens, so each job reserves more than it costs and settles with a release: two ledger rows a job, one movement
# each way, and a second settlement would show as a second release or a second usage row.
IN_MICROS, OUT_MICROS, CALL_MICROS = 100, 200, 1_000
PRICE = {"input_per_1m": IN_MICROS, "output_per_1m": OUT_MICROS, "per_request": CALL_MICROS / 1_000_000}
TOP_UP = 100_000_000  # $100
SLOW = 0.6  # seconds a node's echo sleeps: long enough that a kill lands mid-node
LONG = 4.0  # the lease-loss node: still running well after its runner is killed

# each kill costs the attempts of the jobs its runner held (and a loaded machine's missed heartbeats cost more):
# the policy leaves room for every kill to land on the same node, so every run must still succeed
CHAT = {"model_id": "echo-slow", "task": "chat", "retry": {"max_attempts": 10, "backoff_seconds": 0.1}}
CHAIN = {"nodes": {
    "a": {**CHAT, "inputs": {"messages": [{"role": "user", "content": "${input.topic} a"}], "max_tokens": 64}},
    "b": {**CHAT, "inputs": {"messages": [{"role": "user", "content": "${nodes.a.result.choices[0].message.content} b"}],
                             "max_tokens": 64}},
    "c": {**CHAT, "inputs": {"messages": [{"role": "user", "content": "${nodes.b.result.choices[0].message.content} c"}],
                             "max_tokens": 64}}},
    "edges": [["a", "b"], ["b", "c"]]}
MAP_ITEMS = 6
FANOUT = {"nodes": {
    "each": {"type": "map", "items": "${input.words}", "max_concurrency": 3,
             "node": {**CHAT, "payload": {"messages": [{"role": "user", "content": "${input.topic} ${item}"}],
                                          "max_tokens": 64}}},
    "after": {**CHAT, "inputs": {"messages": [{"role": "user", "content":
                                               "after ${nodes.each.result.items[2].choices[0].message.content}"}],
                                 "max_tokens": 64}}},
    "edges": [["each", "after"]]}
LOST = {"nodes": {
    "a": {"model_id": "echo", "task": "chat", "inputs": {"messages": [{"role": "user", "content": "first"}]}},
    "b": {"model_id": "echo-long", "task": "chat", "retry": {"max_attempts": 1},
          "inputs": {"messages": [{"role": "user", "content": "${nodes.a.result.choices[0].message.content} b"}]}},
    "c": {"model_id": "echo", "task": "chat",
          "inputs": {"messages": [{"role": "user", "content": "${nodes.b.result.choices[0].message.content} c"}]}}},
    "edges": [["a", "b"], ["b", "c"]]}


def chain_expected(topic: str) -> dict[str, str]:
    return {"a": f"{topic} a", "b": f"{topic} a b", "c": f"{topic} a b c"}


def fanout_expected(topic: str, words: list[str]) -> dict[tuple[str, int | None], str]:
    out: dict[tuple[str, int | None], str] = {("each", i): f"{topic} {w}" for i, w in enumerate(words)}
    out[("after", None)] = f"after {topic} {words[2]}"
    return out


def price_of(text: str) -> int:
    """What one echo of `text` costs: the echo counts a token per word, in and out."""
    n = len(text.split())
    return n * IN_MICROS + n * OUT_MICROS + CALL_MICROS


def content(result: Any) -> str:
    return result["choices"][0]["message"]["content"]


def single_execution(result: dict[str, Any], text: str) -> bool:
    """A node's stored result is the one echo of its text (the id and clock fields differ between executions)."""
    n = len(text.split())
    return (content(result) == text and result["usage"] == {"prompt_tokens": n, "completion_tokens": n,
                                                            "total_tokens": 2 * n}
            and [c["finish_reason"] for c in result["choices"]] == ["stop"])


class AgentHarness(RunnerProcesses):
    """A database with a funded org and its agents, and `modelyard runner` subprocesses that run them."""

    def __init__(self, tmp: Path, database_url: str) -> None:
        self.tmp = tmp
        self.config = tmp / "modelyard.yaml"
        models = job_models(SLOW) + [{"id": "echo-long", "type": "text",
                                      "deployments": [{"backend": "echo", "options": {"delay_seconds": LONG}}]}]
        for m in models:
            if m["id"].startswith("echo"):
                m["price"] = PRICE
        fast = {k: v for k, v in FAST.items() if k != "builtin_models"}
        self.config.write_text(yaml.safe_dump({"database_url": database_url, "builtin_models": False,
                                               "models": models, "job_concurrency": 8, **fast}))
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self.org_id = ""
        self.agents: dict[str, str] = {}
        self.run(self._setup)

    # ---------------------------------------------------------------- in this process

    def run(self, fn: Callable[[AgentService], Awaitable[Any]]) -> Any:
        """`fn` with an agent service on a fresh context (its own store and gate), closed afterwards."""
        async def go() -> Any:
            settings = load_settings(self.config, data_dir=str(self.tmp / "client"))
            store = Store(settings.resolved_database_url)
            catalog = build_catalog(settings)
            router = Router(catalog)
            ctx = runner_context(settings, store, catalog, router)
            try:
                await store.migrate()
                await ctx.gate.start(router, catalog)
                return await fn(AgentService(ctx))
            finally:
                await ctx.gate.aclose()
                await router.aclose()
                await store.aclose()
        return asyncio.run(go())

    async def _setup(self, svc: AgentService) -> None:
        org = await OrgRepo(svc.ctx.store).create("agent-crash", plan="enterprise")
        self.org_id = org.id
        await WalletRepo(svc.ctx.store).top_up(org.id, TOP_UP)
        principal = self.principal()
        for name, dag in (("chain", CHAIN), ("fanout", FANOUT), ("lost", LOST)):
            self.agents[name] = (await svc.create(principal, {"name": name, "dag": dag})).id

    def principal(self) -> Principal:
        return Principal(token_id="", org_id=self.org_id, org_name="agent-crash", plan="enterprise",
                         scopes=frozenset(), expires_at=None)

    def start_runs(self, agent: str, inputs: list[dict[str, Any]]) -> list[str]:
        async def go(svc: AgentService) -> list[str]:
            out = []
            for params in inputs:
                run, _ = await svc.run(self.principal(), self.agents[agent], {"input_params": params},
                                       base_url="http://test/", idempotency_key=None, client=None)
                out.append(run.id)
            return out
        return self.run(go)

    def rows(self, table: Any, *where: Any) -> list[Any]:
        async def go(svc: AgentService) -> list[Any]:
            async with svc.ctx.store.engine.connect() as conn:
                return list((await conn.execute(select(table).where(*where))).all())
        return self.run(go)

    def runs(self) -> dict[str, Any]:
        return {r.id: r for r in self.rows(agent_runs)}



@pytest.fixture
def harness(tmp_path: Path, database_url: str) -> Any:
    h = AgentHarness(tmp_path, database_url)
    yield h
    h.stop_all()


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """The runners are other processes: poll the database for what they did."""
    return wait_until(check, timeout, what, interval=0.2)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_runs_survive_random_sigkills_without_rerunning_or_recharging(harness: AgentHarness) -> None:
    h = harness
    seed = int(os.environ.get("AGENT_CRASH_SEED", "20240611"))
    print(f"\nseed {seed} (AGENT_CRASH_SEED reruns it)")
    rng = random.Random(seed)
    chains: dict[str, str] = {}  # run id -> topic
    fanouts: dict[str, tuple[str, list[str]]] = {}

    def wave(n: int) -> None:
        topics = [f"t{len(chains) + i}" for i in range(n)]
        chains.update(zip(h.start_runs("chain", [{"topic": t} for t in topics]), topics))
        base = len(fanouts)
        words = [[f"w{base}-{k}-{i}" for i in range(MAP_ITEMS)] for k in range(max(n // 2, 1))]
        made = h.start_runs("fanout", [{"topic": f"f{base}-{k}", "words": w} for k, w in enumerate(words)])
        fanouts.update((rid, (f"f{base}-{k}", w)) for k, (rid, w) in enumerate(zip(made, words)))

    runners = {f"r{i}": h.start_runner(f"r{i}") for i in range(3)}
    wave(6)
    kills, waves = 0, 1
    started = time.monotonic()
    # kill a runner holding a running node job every random stretch (a deliberate, random delay), restart it at once,
    # and start more runs between kills, so kills land on first nodes, middles, map items and final advances
    while kills < 12 and time.monotonic() - started < 60:
        time.sleep(rng.uniform(0.2, 1.5))
        holders = sorted({j.lease_owner for j in h.rows(jobs, jobs.c.status == "running")} & set(runners))
        victim = rng.choice(holders or sorted(runners))
        kill(runners[victim])
        kills += 1
        runners[victim] = h.start_runner(victim)
        if kills in (4, 8):
            wave(4)
            waves += 1
        if all(r.status not in ("pending", "running") for r in h.runs().values()) and waves == 3:
            break
    every = set(chains) | set(fanouts)
    runs = wait_for(lambda: (rs := h.runs()) and all(rs[r].status in ("succeeded", "failed", "cancelled")
                                                    for r in every) and rs, 90, "every run to end")
    assert {rid: runs[rid].status for rid in every} == {rid: "succeeded" for rid in every}, \
        {rid: runs[rid].error for rid in every if runs[rid].status != "succeeded"}

    # one job per (run, node, item), ever
    all_jobs = h.rows(jobs, jobs.c.org_id == h.org_id)
    per_key = Counter((j.run_id, j.run_node, j.run_item) for j in all_jobs)
    assert max(per_key.values()) == 1
    expected: dict[tuple[str, str, int | None], str] = {}
    for rid, topic in chains.items():
        expected.update({(rid, n, None): text for n, text in chain_expected(topic).items()})
    for rid, (topic, words) in fanouts.items():
        expected.update({(rid, n, i): text for (n, i), text in fanout_expected(topic, words).items()})
    assert set(per_key) == set(expected)

    # each job completed once, its result the one execution of its text; node rows show the same
    by_key = {(j.run_id, j.run_node, j.run_item): j for j in all_jobs}
    assert all(j.status == "completed" for j in all_jobs)
    bad = {k: content(by_key[k].result) for k, text in expected.items() if not single_execution(by_key[k].result, text)}
    assert not bad
    done = h.completions()
    assert max(done.values()) == 1 and set(done) <= {j.id for j in all_jobs}
    nodes = {(n.run_id, n.node_id): n for n in h.rows(agent_run_nodes, agent_run_nodes.c.run_id.in_(every))}
    assert all(n.state == "succeeded" for n in nodes.values())
    for rid, topic in chains.items():
        assert {n: content(nodes[(rid, n)].result) for n in "abc"} == chain_expected(topic)
        assert runs[rid].outputs == {"c": nodes[(rid, "c")].result}
    for rid, (topic, words) in fanouts.items():
        each = nodes[(rid, "each")]
        assert [content(r) for r in each.result["items"]] == [f"{topic} {w}" for w in words]
        assert (each.done, each.failed, each.total, each.result["errors"]) == (MAP_ITEMS, 0, MAP_ITEMS, [])
        assert content(nodes[(rid, "after")].result) == f"after {topic} {words[2]}"
    # a node's result is written once: one node.succeeded in the event log, one run.completed per run
    events = Counter((e.run_id, e.type, (e.data or {}).get("node"))
                     for e in h.rows(agent_run_events, agent_run_events.c.run_id.in_(every)))
    assert {k: v for k, v in events.items() if k[1] in ("node.succeeded", "run.completed") and v != 1} == {}
    assert sum(v for k, v in events.items() if k[1] == "node.succeeded") == len(nodes)

    # settled once each: the runner that completed a job settles it; a settlement its killed runner never recorded
    # is swept up by a live one a grace period later
    wait_for(lambda: not any(j.settle_due for j in h.rows(jobs, jobs.c.org_id == h.org_id)), 120,
             "every job's settlement")
    usage = h.rows(usage_records, usage_records.c.org_id == h.org_id)
    assert Counter(u.status for u in usage) == Counter(ok=len(all_jobs))
    assert Counter(u.job_id for u in usage) == Counter({j.id: 1 for j in all_jobs})
    prices = {by_key[k].id: price_of(text) for k, text in expected.items()}
    assert {u.job_id: u.price_micros for u in usage} == prices
    assert {(u.job_id, u.run_id, u.run_node) for u in usage} == {(j.id, j.run_id, j.run_node) for j in all_jobs}

    # the wallet: per job one reservation and one release of what it did not cost. An advance that lost its run's
    # lease to another engine (slow under the kills) admitted items it never wrote: their reservations are named
    # after the jobs, so the engine that wrote each job adopted it. Nothing else moved but the top-up.
    ledger = h.rows(wallet_ledger, wallet_ledger.c.org_id == h.org_id)
    refs = {j.meta["hold"]["ref"]: j for j in all_jobs}
    assert len(refs) == len(all_jobs)
    moved = Counter((row.kind, row.ref) for row in ledger if row.kind != "top_up")
    assert {k: n for k, n in moved.items() if k[1] in refs} == \
        {(kind, ref): 1 for ref in refs for kind in ("reserve", "release")}, "a job's reservation or release twice"
    charged: dict[str, int] = {}
    for row in ledger:
        if row.kind != "top_up":
            charged[row.ref] = charged.get(row.ref, 0) - row.amount_micros
    assert {refs[ref].id: c for ref, c in charged.items() if ref in refs} == prices
    total = sum(prices.values())
    unwritten = {ref: c for ref, c in charged.items() if ref not in refs}
    assert sum(row.amount_micros for row in ledger) == TOP_UP - total - sum(unwritten.values())

    async def balance(svc: AgentService) -> int:
        return await WalletRepo(svc.ctx.store).balance(h.org_id)
    assert h.run(balance) == TOP_UP - total - sum(unwritten.values())

    retried = sum(j.attempts > 1 for j in all_jobs)
    assert retried >= 1  # the kills did land mid-node: those nodes ran again, and still count once
    # an engine admits a node's items (the wallet reservation commits at once) before the advance that writes their
    # jobs commits. A runner killed in between leaves a reservation named after the job it was for: the next advance
    # adopts it when it admits that job again, and a run's end refunds any that no job took up
    assert all(moved[("reserve", ref)] == 1 and moved[("release", ref)] <= 1 for ref in unwritten)
    assert all(c == 0 for c in unwritten.values()), ("a reservation kept for work that was never queued", [
        (ref, c, [(r.kind, r.amount_micros, str(r.created_at)) for r in ledger if r.ref == ref])
        for ref, c in unwritten.items() if c])
    print(f"{len(every)} runs, {len(all_jobs)} node jobs, 3 runners, {kills} SIGKILLs: "
          f"{time.monotonic() - started:.1f}s; {retried} jobs needed another attempt; charged {total} micro-dollars; "
          f"{len(unwritten)} reservations refunded at a run's end")


@pytest.mark.slow
def test_a_lost_lease_fails_a_node_with_one_attempt_and_ends_the_run(harness: AgentHarness) -> None:
    h = harness
    [run_id] = h.start_runs("lost", [{}])
    a = h.start_runner("runner-a")
    job = wait_for(lambda: next((j for j in h.rows(jobs, jobs.c.run_id == run_id, jobs.c.run_node == "b")
                                 if j.status == "running"), None), 30, "runner-a to start node b")
    assert job.lease_owner == "runner-a"
    kill(a)  # mid-node: b's echo sleeps for seconds yet
    h.start_runner("runner-b")
    run = wait_for(lambda: (r := h.runs()[run_id]).status not in ("pending", "running") and r, 40, "the run to end")
    assert run.status == "failed"
    assert run.error["code"] == "node_failed" and run.error["node"] == "b"
    assert run.error["node_error"]["code"] == "lease_expired"
    nodes = {n.node_id: n for n in h.rows(agent_run_nodes, agent_run_nodes.c.run_id == run_id)}
    assert (nodes["a"].state, nodes["b"].state, nodes["c"].state) == ("succeeded", "failed", "skipped")
    assert nodes["b"].error["code"] == "lease_expired"
    rows = {j.run_node: j for j in h.rows(jobs, jobs.c.run_id == run_id)}
    assert set(rows) == {"a", "b"}  # c never started: no job
    assert (rows["b"].status, rows["b"].attempts) == ("dead_letter", 1)
    assert h.completions()[rows["b"].id] == 0
    # b's reservation went back whole: its usage row is a failed one at no price, a's is charged
    wait_for(lambda: not any(j.settle_due for j in h.rows(jobs, jobs.c.run_id == run_id)), 90, "settlement")
    usage = {u.run_node: u for u in h.rows(usage_records, usage_records.c.run_id == run_id)}
    assert (usage["b"].status, usage["b"].price_micros) == ("failed", 0)
    assert (usage["a"].status, usage["a"].price_micros) == ("ok", price_of("first"))
    ledger = h.rows(wallet_ledger, wallet_ledger.c.ref == rows["b"].meta["hold"]["ref"])
    assert sum(r.amount_micros for r in ledger) == 0 and len(ledger) == 2
