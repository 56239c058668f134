"""Batch throughput and memory: an embeddings batch and a chat batch on the echo backend, through real processes.

A `modelyard serve` gateway (accepting work only) and one `modelyard runner` (driving the batches and running their
lines) share a database and the data dir; the official openai SDK uploads the input, creates the batch and polls.
Printed: lines/s, seconds in each status, and the peak RSS (VmHWM) of the gateway and of the runner, which stay flat
as the files grow because input and output files are streamed.
Run: `python bench/batches.py [--embeddings 10000] [--chat 1000] [--postgres postgresql://postgres@127.0.0.1/test]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import yaml

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "myd_bench-admin-key-" + "x" * 24
STATUSES = ("validating", "in_progress", "finalizing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(args: list[str], tmp: Path, name: str) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")},
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "modelyard.cli", *args], cwd=tmp, env=env,
                            stdout=subprocess.DEVNULL, stderr=(tmp / f"{name}.log").open("wb"))


def run_batch(client: openai.OpenAI, endpoint: str, lines: list[dict]) -> tuple[dict[str, float], float, int]:
    """(seconds in each status, total seconds from create to the end, output lines)."""
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    file_id = client.files.create(file=("bench.jsonl", data), purpose="batch").id
    t0 = time.perf_counter()
    batch = client.batches.create(input_file_id=file_id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
    spent = {s: 0.0 for s in STATUSES}
    last, at = batch.status, t0
    while True:
        time.sleep(0.05)
        b = client.batches.retrieve(batch.id)
        now = time.perf_counter()
        if b.status != last:
            spent[last] = spent.get(last, 0.0) + now - at
            last, at = b.status, now
        if b.status in ("completed", "failed", "expired", "cancelled"):
            break
    assert b.status == "completed", b
    out = client.files.content(b.output_file_id).text.count("\n") if b.output_file_id else 0
    return spent, time.perf_counter() - t0, out


def bench(database_url: str | None, n_embed: int, n_chat: int, concurrency: int) -> list[tuple]:
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-bench-batches-"))
    db = database_url or f"sqlite:///{tmp / 'data' / 'modelyard.db'}"
    config = tmp / "modelyard.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": db, "admin_key": ADMIN, "builtin_models": False, "job_runner": False,
        "job_concurrency": concurrency, "batch_concurrency": concurrency, "job_poll_seconds": 0.05,
        "models": [{"id": "echo", "type": "text", "deployments": [{"backend": "echo"}]},
                   {"id": "echo-embed", "type": "embedding", "deployments": [{"backend": "echo"}]}]}))
    port = free_port()
    gateway = start(["serve", "--config", str(config), "--data-dir", str(tmp / "data"), "--port", str(port)],
                    tmp, "gateway")
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    runner = start(["runner", "--config", str(config), "--data-dir", str(tmp / "data"), "--name", "bench"],
                   tmp, "runner")
    rows = []
    try:
        client = openai.OpenAI(api_key=ADMIN, base_url=url + "/v1", max_retries=2, timeout=120)
        cases = [("embeddings", "/v1/embeddings", [
                     {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                      "body": {"model": "echo-embed", "input": f"embedding input number {i}"}} for i in range(n_embed)]),
                 ("chat", "/v1/chat/completions", [
                     {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "echo", "messages": [{"role": "user", "content": f"hello number {i}"}]}}
                     for i in range(n_chat)])]
        for name, endpoint, lines in cases:
            spent, total, out = run_batch(client, endpoint, lines)
            rows.append((name, len(lines), out, len(lines) / total, spent, peak_rss_mb(gateway.pid),
                         peak_rss_mb(runner.pid)))
    finally:
        for proc in (runner, gateway):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return rows


async def fresh_pg(base: str) -> str:
    import asyncpg

    name = "modelyard_bench_" + secrets.token_hex(4)
    conn = await asyncpg.connect(base)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return base.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embeddings", type=int, default=10_000)
    ap.add_argument("--chat", type=int, default=1_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--postgres", help="also run on a fresh database on this server")
    a = ap.parse_args()
    targets: list[tuple[str, str | None]] = [("sqlite", None)]
    if a.postgres:
        targets.append(("postgres", asyncio.run(fresh_pg(a.postgres))))
    print("| db | batch | lines | output lines | lines/s | validating s | in_progress s | finalizing s "
          "| gateway peak RSS MB | runner peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for db_name, url in targets:
        for name, n, out, rate, spent, gw, rn in bench(url, a.embeddings, a.chat, a.concurrency):
            print(f"| {db_name} | {name} | {n} | {out} | {rate:.0f} | {spent['validating']:.2f} | "
                  f"{spent['in_progress']:.2f} | {spent['finalizing']:.2f} | {gw:.0f} | {rn:.0f} |", flush=True)


if __name__ == "__main__":
    main()
