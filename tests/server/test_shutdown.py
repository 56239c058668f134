"""Graceful shutdown of a real `modelyard serve`: SIGTERM during open streams and a running job loses nothing.

Every stream either completes or ends with the face's error event, the job goes back to the queue at once (another
runner process takes it as its first attempt, long before its lease would have expired), the process exits 0, and
there is one usage row per call once a restart has replayed any spool.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from modelyard.config import normalize_database_url
from modelyard.store.db import Store
from modelyard.store.tables import jobs, usage_records

from ..conftest import ADMIN_KEY
from ..support.jobs import FAST, chat_payload, job_models
from ..support.openai_stub import StubControl, create_stub
from ..support.paths import REPO
from ..support.servers import ServerThread, free_port
from ..support.waiting import wait_until

GRACE = 6.0
LEASE = 120.0  # a job left to its lease would wait this long: the test's bounds are far below it


def _env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    return {**clean, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


class Stream(threading.Thread):
    """One streamed chat call, read to its end: what came, and how it ended."""

    def __init__(self, url: str, model: str) -> None:
        super().__init__(daemon=True)
        self.url, self.model = url, model
        self.events: list[str] = []
        self.opened = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", timeout=120,
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                              json={"model": self.model, "stream": True,
                                    "messages": [{"role": "user", "content": "hi"}]}) as r:
                assert r.status_code == 200, r.read()
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:])
                        self.opened.set()
        except Exception as exc:  # a connection cut without an ending: what the test must never see
            self.error = repr(exc)
            self.opened.set()

    @property
    def outcome(self) -> str:
        if self.error is not None or not self.events or self.events[-1] != "[DONE]":
            return f"broken ({self.error}, {self.events[-2:]})"
        last = json.loads(self.events[-2])
        if "error" in last:
            return "cut:" + last["error"]["code"]
        return "completed" if last["choices"] and last["choices"][0].get("finish_reason") == "stop" else "odd"


class Harness:
    def __init__(self, tmp: Path, quick_url: str, slow_url: str) -> None:
        self.tmp = tmp
        self.db = f"sqlite:///{tmp / 'data' / 'modelyard.db'}"
        self.config = tmp / "modelyard.yaml"
        models = job_models(delay=8.0) + [
            {"id": "quick", "type": "text", "deployments": [{"backend": "openai", "base_url": quick_url + "/v1"}]},
            {"id": "slow", "type": "text", "deployments": [{"backend": "openai", "base_url": slow_url + "/v1"}]},
        ]
        self.config.write_text(yaml.safe_dump({
            **FAST, "builtin_models": False, "models": models, "admin_key": ADMIN_KEY, "database_url": self.db,
            "job_lease_seconds": LEASE, "shutdown_grace_seconds": GRACE, "usage_flush_seconds": 0.5}))
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, *args: str, log: str, stdout: bool = False) -> subprocess.Popen:
        err = (self.tmp / log).open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "modelyard.cli", *args, "--config", str(self.config),
                                 "--data-dir", str(self.tmp / "data"), "--log-level", "info"],
                                cwd=self.tmp, env=_env(), stdout=err if stdout else subprocess.DEVNULL,
                                stderr=err)
        self.procs.append(proc)
        return proc

    def serve(self, log: str) -> tuple[subprocess.Popen, str]:
        port = free_port()
        proc = self._spawn("serve", "--port", str(port), log=log)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError((self.tmp / log).read_text()[-3000:])
            try:
                return httpx.get(url + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, 60, "the server to start", interval=0.1)
        return proc, url

    def runner(self, name: str) -> subprocess.Popen:
        """A `modelyard runner` process, returned once it has started (its banner comes after the package's imports,
        which on a loaded machine take tens of seconds: the test's own bounds must not include them)."""
        proc = self._spawn("runner", "--name", name, log=f"{name}.log", stdout=True)
        out = self.tmp / f"{name}.log"

        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(out.read_text()[-3000:])
            return "Modelyard job runner" in out.read_text()
        wait_until(started, 120, f"runner {name} to start")
        return proc

    def query(self, fn: Any) -> Any:
        async def go() -> Any:
            store = Store(normalize_database_url(self.db))
            try:
                async with store.engine.connect() as conn:
                    return await fn(conn)
            finally:
                await store.aclose()
        return asyncio.run(go())

    def job(self, job_id: str) -> Any:
        async def fn(conn: Any) -> Any:
            return (await conn.execute(select(jobs.c.status, jobs.c.attempts, jobs.c.lease_owner)
                                       .where(jobs.c.id == job_id))).one()
        return self.query(fn)

    def usage_rows(self) -> int:
        async def fn(conn: Any) -> int:
            return int((await conn.execute(select(func.count()).select_from(usage_records))).scalar_one())
        return self.query(fn)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def harness(tmp_path: Path) -> Any:
    quick = StubControl(chunk_delay=0.2, reply=" ".join(["word"] * 8))  # done well inside the grace period
    slow = StubControl(chunk_delay=1.0, reply=" ".join(["word"] * 120))  # still streaming at its end
    with ServerThread(create_stub(quick)) as q, ServerThread(create_stub(slow)) as s:
        h = Harness(tmp_path, q.url, s.url)
        yield h
        h.close()


@pytest.mark.slow
def test_sigterm_during_streams_and_a_job_loses_nothing(harness: Harness) -> None:
    h = harness
    server, url = h.serve("serve-0.log")
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    job_id = httpx.post(url + "/api/jobs", headers=auth,
                        json={"model_id": "echo-slow", "task": "chat", "payload": chat_payload("still here")}
                        ).json()["id"]
    wait_until(lambda: h.job(job_id).status == "running", 30, "the server's runner to take the job")
    owner = h.job(job_id).lease_owner
    other = h.runner("other-runner")  # the job is leased: it waits for one

    streams = [Stream(url, "quick" if i % 2 else "slow") for i in range(20)]
    for s in streams:
        s.start()
    for s in streams:
        assert s.opened.wait(30), "a stream did not open"

    server.send_signal(signal.SIGTERM)
    # handed back at SIGTERM, taken by the other runner as the same attempt (a lease expiry would make it 2)
    picked = wait_until(lambda: (j := h.job(job_id)).lease_owner == "other-runner" and j, 60,
                        "the other runner to take the job")  # far below LEASE; attempts says which way it came
    assert picked.attempts == 1 and owner != "other-runner"
    assert server.wait(GRACE + 60) == 0
    for s in streams:
        s.join(30)
    outcomes = [s.outcome for s in streams]
    assert outcomes.count("completed") == 10, outcomes  # the quick ones finished inside the grace period
    assert outcomes.count("cut:server_shutting_down") == 10, outcomes  # the slow ones ended with the error event
    log = (h.tmp / "serve-0.log").read_text()
    assert "ending 10 open stream(s) with an error event" in log

    done = wait_until(lambda: (j := h.job(job_id)).status == "completed" and j, 60, "the other runner to finish")
    assert done.attempts == 1
    other.send_signal(signal.SIGTERM)
    assert other.wait(60) == 0

    # a restart replays whatever the shutdown spooled: one usage row per call (20 streams, 1 job)
    again, url = h.serve("serve-1.log")
    wait_until(lambda: httpx.get(url + "/readyz").json()["write_behind"]["spool_records"] == 0, 60,
               "the spool to replay")
    again.send_signal(signal.SIGTERM)
    assert again.wait(60) == 0
    assert h.usage_rows() == 21
