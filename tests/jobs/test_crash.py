"""Crash safety: runners killed with SIGKILL lose no job and finish none twice; restarts keep pending jobs."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelyard.jobs.queue import JobQueue
from modelyard.store.db import Store
from modelyard.store.repo import OrgRepo

from ..conftest import make_settings, running
from ..support.jobs import FAST, chat_payload, job_models
from ..support.processes import RunnerProcesses
from ..support.waiting import wait_until



class Harness(RunnerProcesses):
    """A database, a config file, and `modelyard runner` subprocesses against them."""

    def __init__(self, tmp: Path, database_url: str, delay: float, **overrides: Any) -> None:
        self.tmp = tmp
        self.url = database_url
        self.config = tmp / "modelyard.yaml"
        settings = {**{k: v for k, v in FAST.items() if k != "builtin_models"}, **overrides}
        self.config.write_text(yaml.safe_dump({"database_url": database_url, "builtin_models": False,
                                               "models": job_models(delay), "job_concurrency": 8, **settings}))
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self.org_id = self.run(self._setup())

    def run(self, coro_fn: Any) -> Any:
        return asyncio.run(coro_fn)

    async def _setup(self) -> str:
        store = Store(make_settings(self.tmp, database_url=self.url).resolved_database_url)
        try:
            await store.migrate()
            return (await OrgRepo(store).create("crash-org")).id
        finally:
            await store.aclose()

    async def _with_queue(self, fn: Any) -> Any:
        store = Store(make_settings(self.tmp, database_url=self.url).resolved_database_url)
        try:
            return await fn(JobQueue(store))
        finally:
            await store.aclose()

    def submit(self, n: int, model: str, max_attempts: int = 20) -> list[str]:
        async def go(q: JobQueue) -> list[str]:
            return [(await q.submit(org_id=self.org_id, token_id=None, model=model, task="chat",
                                    payload=chat_payload(f"job {i}"), meta={}, max_attempts=max_attempts)).id
                    for i in range(n)]
        return self.run(self._with_queue(go))

    def statuses(self) -> dict[str, Any]:
        async def go(q: JobQueue) -> dict[str, Any]:
            from sqlalchemy import select

            from modelyard.store.tables import jobs
            async with q.engine.connect() as conn:
                rows = (await conn.execute(select(jobs.c.id, jobs.c.status, jobs.c.attempts, jobs.c.lease_owner,
                                                  jobs.c.result))).all()
            return {r.id: r for r in rows}
        return self.run(self._with_queue(go))

    def log(self, name: str) -> str:
        """What the runner of that name has logged so far (all its starts)."""
        return "".join(log.read_text(errors="replace") for _, log in self.procs if log.name.startswith(name + "-"))



@pytest.fixture
def harness(tmp_path: Path, database_url: str) -> Any:
    made: list[Harness] = []

    def make(delay: float = 3.0, **overrides: Any) -> Harness:
        made.append(Harness(tmp_path, database_url, delay, **overrides))
        return made[-1]
    yield make
    for h in made:
        h.stop_all()


def wait_for(check: Any, timeout: float, what: str) -> Any:
    """The runners are other processes: poll the database for what they did."""
    return wait_until(check, timeout, what, interval=0.2)


@pytest.mark.slow
def test_job_of_a_killed_runner_completes_on_another(harness: Any) -> None:
    h = harness(delay=3.0)
    [job_id] = h.submit(1, "echo-slow")
    a = h.start_runner("runner-a")
    wait_for(lambda: h.statuses()[job_id].status == "running", 30, "runner-a to take the job")
    assert h.statuses()[job_id].lease_owner == "runner-a"
    a.send_signal(signal.SIGKILL)  # mid-job: the 3 s echo is still sleeping
    a.wait()
    h.start_runner("runner-b")
    row = wait_for(lambda: (r := h.statuses()[job_id]).status == "completed" and r, 40, "runner-b to finish it")
    assert row.attempts == 2 and row.result["choices"][0]["message"]["content"] == "job 0"
    assert h.completions() == Counter({job_id: 1})


@pytest.mark.slow
def test_thousand_jobs_three_runners_random_kills(harness: Any) -> None:
    h = harness(delay=0.02)
    ids = h.submit(1000, "echo-slow")
    rng = random.Random(6)
    runners = {f"r{i}": h.start_runner(f"r{i}") for i in range(3)}
    kills = 0
    started = time.monotonic()
    # a kill each time the runners have finished another random stretch of jobs (progress, not the clock, paces it)
    for target in sorted(rng.sample(range(50, 950), 6)):
        wait_for(lambda n=target: sum(r.status == "completed" for r in h.statuses().values()) >= n, 60,
                 f"{target} jobs to complete")
        victim = rng.choice(sorted(runners))
        runners[victim].send_signal(signal.SIGKILL)
        runners[victim].wait()
        kills += 1
        runners[victim] = h.start_runner(victim)
    rows = wait_for(lambda: (rs := h.statuses()) and all(r.status == "completed" for r in rs.values()) and rs,
                    60, "every job to complete")
    assert set(rows) == set(ids)  # none lost
    done = h.completions()
    assert max(done.values()) == 1 and set(done) <= set(ids)  # none completed twice
    # a runner killed between its commit and its log line leaves no line; the row names who finished the job
    unlogged = set(ids) - set(done)
    assert len(unlogged) <= kills * 8 and all(rows[j].lease_owner in runners for j in unlogged)
    assert kills >= 1
    print(f"\n1000 jobs, 3 runners, {kills} SIGKILLs: {time.monotonic() - started:.1f}s; "
          f"{sum(r.attempts > 1 for r in rows.values())} jobs needed a second attempt")


def test_server_restart_keeps_every_pending_job(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url=database_url, models=job_models(), **{**FAST, "job_runner": False})
    with running(settings) as srv, httpx.Client(base_url=srv.url) as http:
        ids = [http.post("/api/jobs", json={"model_id": "echo", "task": "chat", "payload": chat_payload(f"r{i}")},
                         headers=srv.headers()).json()["id"] for i in range(20)]
        assert all(http.get(f"/api/jobs/{i}", headers=srv.headers()).json()["status"] == "pending" for i in ids)
    again = make_settings(tmp_path, database_url=database_url, models=job_models(), **FAST)
    with running(again) as srv, httpx.Client(base_url=srv.url) as http:
        def all_done() -> bool:
            return all(http.get(f"/api/jobs/{i}", headers=srv.headers()).json()["status"] == "completed" for i in ids)
        wait_for(all_done, 30, "the restarted server to run the pending jobs")
        body = http.get(f"/api/jobs/{ids[7]}", headers=srv.headers()).json()
        assert body["result"]["choices"][0]["message"]["content"] == "r7"


@pytest.mark.slow
def test_cancel_reaches_a_runner_in_another_process(harness: Any) -> None:
    h = harness(delay=3.0)
    [job_id] = h.submit(1, "echo-slow")
    h.start_runner("remote")
    wait_for(lambda: h.statuses()[job_id].status == "running", 30, "the runner to take the job")

    async def cancel(q: JobQueue) -> str:
        return (await q.cancel(job_id, h.org_id))[1]
    assert h.run(h._with_queue(cancel)) == "requested"
    # cancelled at the runner's next heartbeat: had the cancel not reached it, the 3 s echo would have completed
    wait_for(lambda: h.statuses()[job_id].status in ("cancelled", "completed"), 20, "the job to end")
    assert h.statuses()[job_id].status == "cancelled"
    assert h.completions() == Counter()


@pytest.mark.slow
def test_postgres_runners_wake_on_notify_not_on_their_poll(harness: Any, database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite runners poll")
    h = harness(delay=0.0, job_poll_seconds=60.0)
    [first] = h.submit(1, "echo")
    h.start_runner("listener")
    wait_for(lambda: h.statuses()[first].status == "completed", 30, "the runner to start and run a job")
    wait_for(lambda: "idle: waiting" in h.log("listener"), 30, "the runner to go idle")  # its next poll: 60 s away
    [second] = h.submit(1, "echo")
    # done well inside the 60 s poll: only the NOTIFY can have woken it
    wait_for(lambda: h.statuses()[second].status == "completed", 20, "a NOTIFY to wake the runner")
