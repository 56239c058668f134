"""What the gate costs per call: admit (+ settle) for a free model on the memory limiter, on Redis, and a paid
call's wallet reservation on SQLite (and PostgreSQL with --postgres URL).

Run: `python bench/gate.py [--calls 20000] [--redis redis://127.0.0.1:6379] [--postgres postgresql://...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path

from modelyard.config import Settings
from modelyard.pipeline.auth import Principal
from modelyard.pipeline.gate import Gate
from modelyard.pipeline.units import Units
from modelyard.store.db import Store
from modelyard.store.repo import OrgRepo
from modelyard.types import Task

BIG = {"limits": [{"scope": "token", "kind": "chat", "count": 10**9}, {"scope": "org", "class": "api", "count": 10**9}]}


class _Model:
    def __init__(self, model_id: str) -> None:
        self.id = model_id


async def _loop(gate: Gate, principals: list[Principal], model: _Model, n: int, settle: bool) -> float:
    start = time.perf_counter()
    for i in range(n):
        t = await gate.admit(principals[i % len(principals)], model, Task.CHAT, kind="chat",
                             estimate=Units(input_tokens=20, output_tokens=100))
        if settle:
            t.settle(Units(input_tokens=20, output_tokens=10))
    return (time.perf_counter() - start) / n * 1e6


async def free_model(calls: int, redis_url: str | None) -> None:
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(data_dir=tmp, plans={"bench": BIG}, redis_url=redis_url,
                        redis_key_prefix=f"bench-{secrets.token_hex(4)}:")
    store = Store(settings.resolved_database_url)
    await store.migrate()
    gate = Gate(settings, store)
    model = _Model("smollm2-135m-instruct")
    ruled = [Principal(f"tok{i}", "org", "o", "bench", frozenset(), None) for i in range(50)]
    unlimited = [Principal("tok", "org", "o", "unlimited", frozenset(), None)]
    n = calls if redis_url is None else max(calls // 10, 500)
    await _loop(gate, ruled, model, n // 10, True)  # warm
    where = "Redis" if redis_url else "memory"
    print(f"free model, {where} limiter, 2-rule plan: admit {await _loop(gate, ruled, model, n, False):7.1f} us/call, "
          f"admit+settle {await _loop(gate, ruled, model, n, True):7.1f} us/call")
    if redis_url is None:
        print(f"free model, unlimited plan:                admit+settle "
              f"{await _loop(gate, unlimited, model, n, True):7.1f} us/call")
    await gate.aclose()
    await store.aclose()


async def paid_model(calls: int, database_url: str | None) -> None:
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(data_dir=tmp, database_url=database_url, plans={"bench": BIG},
                        prices={"paid": {"per_request": 0.000001}})
    store = Store(settings.resolved_database_url)
    await store.migrate()
    org = await OrgRepo(store).create(f"bench-{secrets.token_hex(4)}", plan="bench")
    gate = Gate(settings, store)
    await gate.wallets.top_up(org.id, 10**12)
    who = [Principal("tok", org.id, org.name, "bench", frozenset(), None)]
    n = max(calls // 20, 200)
    per_call = await _loop(gate, who, _Model("paid"), n, True)
    start = time.perf_counter()
    await gate.flush()
    flush_ms = (time.perf_counter() - start) * 1000
    db = "PostgreSQL" if database_url else "SQLite"
    print(f"paid model, {db}: admit (one reserving transaction) + settle {per_call:7.1f} us/call; "
          f"batched flush of {n} releases/usage rows {flush_ms:.0f} ms")
    await gate.aclose()
    await store.aclose()


async def on_scratch_postgres(server_url: str, calls: int) -> None:
    """Measure on a fresh database next to the one named, dropped afterwards: never touch a shared schema."""
    import asyncpg

    name = "modelyard_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await paid_model(calls, server_url.rpartition("/")[0] + "/" + name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--redis", help="also measure the Redis limiter at this URL")
    p.add_argument("--postgres", help="also measure the paid path on a scratch database on this PostgreSQL server")
    args = p.parse_args()
    await free_model(args.calls, None)
    if args.redis:
        await free_model(args.calls, args.redis)
    await paid_model(args.calls, None)
    if args.postgres:
        await on_scratch_postgres(args.postgres, args.calls)


if __name__ == "__main__":
    asyncio.run(main())
