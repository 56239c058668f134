"""Nothing accounted is lost: one usage row per successful call, and every reservation settled, across sustained
load, SIGTERM, a database locked mid-run, and SIGKILL then restart (the spool replays, no row twice)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from modelyard.config import normalize_database_url
from modelyard.store.db import Store
from modelyard.store.tables import usage_records, wallet_ledger, wallets

from ..conftest import ADMIN_KEY
from ..support.accounts import create_key, create_org, top_up
from ..support.servers import free_port
from ..support.paths import REPO, SUPPORT
from ..support.waiting import wait_until

PLANS = {"bulk": {"limits": [{"scope": "org", "count": 10**9}]}}
MODELS = [
    {"id": "echo", "type": "text", "deployments": [{"backend": "echo"}]},
    # the reservation prices max_tokens of output; the echo answers fewer, so every call releases a remainder
    {"id": "echo-paid", "type": "text", "price": {"input_per_1m": 10.0, "output_per_1m": 1000.0},
     "deployments": [{"backend": "echo"}]},
]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


class Gateway:
    """A real `modelyard serve` process on a config file, restartable on the same data dir and database."""

    def __init__(self, tmp: Path, database_url: str, **settings: Any) -> None:
        self.tmp, self.database_url = tmp, database_url
        self.config = tmp / "modelyard.yaml"
        self.config.write_text(yaml.safe_dump({
            "database_url": database_url, "admin_key": ADMIN_KEY, "builtin_models": False, "models": MODELS,
            "plans": PLANS, "usage_flush_seconds": 0.5, "shutdown_grace_seconds": 30, "job_runner": False,
            **settings}))
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.logs: list[Path] = []

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = self.tmp / f"serve-{len(self.logs)}.log"
        self.logs.append(log)
        self.proc = subprocess.Popen([sys.executable, "-m", "modelyard.cli", "serve", "--config", str(self.config),
                                      "--data-dir", str(self.tmp / "data"), "--port", str(port),
                                      "--log-level", "warning"],
                                     env=_env(), cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        wait_until(self._up, 60, "the server to start")

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited: {self.logs[-1].read_text()[-3000:]}")
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or ADMIN_KEY}"}

    def writer(self) -> dict[str, Any]:
        return httpx.get(self.url + "/readyz", timeout=10).json()["write_behind"]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(90)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def gateway(tmp_path: Path, database_url: str) -> Any:
    made: list[Gateway] = []

    def make(**settings: Any) -> Gateway:
        made.append(Gateway(tmp_path, database_url, **settings))
        return made[-1]
    yield make
    for g in made:
        g.close()


class Load:
    """The load generator subprocess (tests/support/loadgen.py)."""

    def __init__(self, gw: Gateway, key: str, model: str, *, calls: int = 100_000, seconds: float = 60,
                 max_tokens: int = 0) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SUPPORT / "loadgen.py"), str(gw.port), key, model,
                                      "--connections", "16", "--calls", str(calls), "--seconds", str(seconds),
                                      "--max-tokens", str(max_tokens)],
                                     stdout=subprocess.PIPE, text=True)
        self.seen = 0

    def wait_for(self, n: int) -> None:
        """Read progress lines until the client has seen `n` successful calls."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("progress"):
                self.seen = int(line.split()[1])
                if self.seen >= n:
                    return
            else:
                raise AssertionError(f"the load generator ended early: {line}")
        raise AssertionError("the load generator ended early")

    def stop(self) -> None:
        """End the load now (each connection finishes the call it has in flight); `result()` still answers."""
        self.proc.send_signal(signal.SIGTERM)

    def result(self) -> dict[str, int]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(120)
        return json.loads(out.strip().splitlines()[-1])


class Lock:
    """The database held unwritable by another process (tests/support/db_lock.py) until released."""

    def __init__(self, database_url: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SUPPORT / "db_lock.py"),
                                      normalize_database_url(database_url)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def _db(database_url: str, fn: Callable[[Any], Any]) -> Any:
    async def go() -> Any:
        store = Store(normalize_database_url(database_url))
        try:
            async with store.engine.connect() as conn:
                return await fn(conn)
        finally:
            await store.aclose()
    return asyncio.run(go())


def _usage(database_url: str, org_id: str) -> dict[str, int]:
    async def fn(conn: Any) -> dict[str, int]:
        rows = (await conn.execute(select(usage_records.c.status, func.count(), func.count(usage_records.c.id.distinct()),
                                          func.coalesce(func.sum(usage_records.c.price_micros), 0))
                                   .where(usage_records.c.org_id == org_id).group_by(usage_records.c.status))).all()
        out = {"ok": 0, "failed": 0, "price": 0}
        for status, n, distinct, price in rows:
            assert n == distinct
            out[status] = int(n)
            out["price"] += int(price)
        return out
    return _db(database_url, fn)


def _account(gw: Gateway, plan: str = "bulk", cents: int = 0) -> tuple[str, str]:
    org = create_org(gw, plan)
    if cents:
        top_up(gw, org["id"], cents)
    return org["id"], create_key(gw, org["id"])


def _settled(database_url: str, org_id: str) -> dict[str, Any]:
    async def fn(conn: Any) -> dict[str, Any]:
        rows = (await conn.execute(select(wallet_ledger.c.kind, wallet_ledger.c.ref, wallet_ledger.c.amount_micros)
                                   .where(wallet_ledger.c.org_id == org_id))).all()
        balance = (await conn.execute(select(wallets.c.balance_micros).where(wallets.c.org_id == org_id))).scalar_one()
        return {"rows": rows, "balance": int(balance)}
    return _db(database_url, fn)


# ---------------------------------------------------------------- SIGTERM under load

def test_sigterm_under_load_leaves_one_usage_row_per_successful_call(gateway: Any, database_url: str) -> None:
    gw = gateway()
    gw.start()
    org_id, key = _account(gw)
    load = Load(gw, key, "echo")
    load.wait_for(3000)
    assert gw.stop(signal.SIGTERM) == 0  # mid-run, exit 0: the load generator is still sending
    seen = load.result()
    assert seen["ok"] >= 3000
    assert _usage(database_url, org_id)["ok"] == seen["ok"]
    assert "database is locked" not in gw.logs[-1].read_text()


def test_paid_calls_under_load_settle_every_reservation(gateway: Any, database_url: str) -> None:
    gw = gateway()
    gw.start()
    org_id, key = _account(gw, cents=100_000)  # $1000
    load = Load(gw, key, "echo-paid", max_tokens=64)
    load.wait_for(800)
    assert gw.stop(signal.SIGTERM) == 0  # a clean drain exits 0 (uvicorn re-raises the signal; serve absorbs it)
    seen = load.result()
    usage = _usage(database_url, org_id)
    assert usage["ok"] == seen["ok"]
    ledger = _settled(database_url, org_id)
    reserves = {ref for kind, ref, _ in ledger["rows"] if kind == "reserve"}
    settled = [ref for kind, ref, _ in ledger["rows"] if kind in ("release", "charge")]
    assert len(settled) == len(set(settled))  # one settlement per call
    assert reserves == set(settled) and len(reserves) >= seen["ok"]
    # a call the client saw fail (cut off at shutdown) was refunded whole; the rest paid their usage price
    assert ledger["balance"] == 100_000 * 10_000 - usage["price"]
    assert ledger["balance"] == sum(amount for _, _, amount in ledger["rows"])


# ---------------------------------------------------------------- a locked database

def test_a_database_locked_mid_run_loses_nothing_and_the_backlog_drains(gateway: Any, database_url: str) -> None:
    gw = gateway()
    gw.start()
    org_id, key = _account(gw)
    load = Load(gw, key, "echo", seconds=120)
    load.wait_for(500)
    lock = Lock(database_url)
    try:
        # held until the server has had to spool (its writes fail or hang), while the load goes on
        wait_until(lambda: gw.writer()["spool_records"] > 0, 60, "the server to spool")
        load.wait_for(load.seen + 1000)
        during = gw.writer()
    finally:
        lock.release()
    assert during["spool_records"] > 0 and during["oldest_unwritten_seconds"] > 0
    assert during["spooled"] >= during["spool_records"]  # a running count: what was replayed stays counted
    load.wait_for(load.seen + 500)
    # the load ends here: on a slow machine the writer may only catch up once it does (keeping up with a flat-out
    # load on the same cores is bench/writer.py's business, not this test's)
    load.stop()
    wait_until(lambda: (w := gw.writer())["spool_records"] == 0 and not w["failing"], 240, "the backlog to drain")
    metrics = httpx.get(gw.url + "/metrics", headers=gw.headers()).text
    assert "modelyard_write_behind_spool_records " in metrics and "modelyard_write_behind_oldest_unwritten_seconds " in metrics
    assert 'modelyard_write_behind_queued{kind="usage"}' in metrics
    spooled = [float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("modelyard_write_behind_spooled_total ")]
    assert spooled and spooled[0] >= during["spool_records"]
    assert gw.stop(signal.SIGTERM) == 0  # a clean drain exits 0 (uvicorn re-raises the signal; serve absorbs it)
    seen = load.result()
    assert _usage(database_url, org_id)["ok"] == seen["ok"]


# ---------------------------------------------------------------- SIGKILL, then restart

def test_sigkill_then_restart_replays_the_spool_once(gateway: Any, database_url: str) -> None:
    gw = gateway()
    gw.start()
    org_id, key = _account(gw)
    lock = Lock(database_url)
    try:
        load = Load(gw, key, "echo", calls=2000)
        seen = load.result()  # every call answered while nothing could be written
        # everything the client saw is durable: spooled (fsynced), nothing left only in memory
        wait_until(lambda: (w := gw.writer())["queued"] == 0 and w["spool_records"] >= seen["ok"], 60,
               "the server to spool every record")
        gw.stop(signal.SIGKILL)
    finally:
        lock.release()
    assert seen["ok"] >= 2000 and _usage(database_url, org_id)["ok"] == 0
    spool = gw.tmp / "data" / "spool"
    assert list(spool.glob("spool-*.jsonl"))
    gw.start()  # the new process replays the dead one's spool file
    wait_until(lambda: gw.writer()["spool_records"] == 0, 60, "the spool to replay")
    assert _usage(database_url, org_id)["ok"] == seen["ok"]
    assert not list(spool.glob("spool-*.jsonl"))
    assert gw.stop(signal.SIGTERM) == 0  # a clean drain exits 0 (uvicorn re-raises the signal; serve absorbs it)
    assert _usage(database_url, org_id)["ok"] == seen["ok"]  # no row twice
