"""The batch driver across processes: a `modelyard runner` SIGKILLed mid-batch loses no line, charges none twice and
puts none in both files; another runner finishes the batch; a local embedder's lines share model calls (SQLite and
PostgreSQL)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from ..conftest import make_settings, quiet_server, running
from ..support.accounts import create_key, create_org, top_up, wallet
from ..support.jobs import FAST
from ..support.paths import REPO
from ..support.waiting import wait_until

MODELS = [{"id": "slow-priced", "type": "text", "price": {"per_request": 0.02},
           "deployments": [{"backend": "echo", "options": {"delay_seconds": 1.0}}]}]
LINES = 16


def _runner(tmp: Path, config: Path, name: str) -> tuple[subprocess.Popen, Path]:
    log = tmp / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "modelyard.cli", "runner", "--config", str(config),
                             "--data-dir", str(tmp / "data"), "--name", name, "--log-level", "info"],
                            env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"), cwd=tmp)
    return proc, log


@pytest.mark.slow
def test_sigkilled_runner_mid_batch(tmp_path: Path, database_url: str) -> None:
    fast = {k: v for k, v in FAST.items() if k != "builtin_models"}
    knobs = {**fast, "builtin_models": False, "batch_concurrency": 6, "job_concurrency": 8}
    settings = make_settings(tmp_path, database_url=database_url, models=MODELS, job_runner=False,
                             auth_cache_ttl=0.0, **{k: v for k, v in knobs.items() if k != "builtin_models"},
                             builtin_models=False)
    config = tmp_path / "modelyard.yaml"
    config.write_text(yaml.safe_dump({"database_url": database_url, "models": MODELS, **knobs}))
    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        with running(settings) as srv:  # a gateway that only accepts work: the runners drive the batch
            org = create_org(srv, "pro")
            top_up(srv, org["id"], 1000)
            client = openai.OpenAI(api_key=create_key(srv, org["id"]), base_url=srv.v1, max_retries=0)
            data = b"".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                        "body": {"model": "slow-priced", "messages": [
                                            {"role": "user", "content": f"line {i}"}]}}).encode() + b"\n"
                            for i in range(LINES))
            file_id = client.files.create(file=("in.jsonl", data), purpose="batch").id
            batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                          completion_window="24h")
            before = wallet(srv, org["id"])["balance_cents"]
            procs.append(_runner(tmp_path, config, "runner-a"))

            def progressed() -> Any:
                b = client.batches.retrieve(batch.id)
                return b if b.request_counts.completed >= 3 else None
            mid = wait_until(progressed, 60, "runner-a to finish some lines", interval=0.1)
            assert mid.status == "in_progress" and mid.request_counts.completed < LINES
            procs[0][0].send_signal(signal.SIGKILL)  # lines are mid-run: each echo sleeps 1 s
            procs[0][0].wait()
            procs.append(_runner(tmp_path, config, "runner-b"))

            def finished() -> Any:
                b = client.batches.retrieve(batch.id)
                return b if b.status in ("completed", "failed", "expired", "cancelled") else None
            done = wait_until(finished, 90, "runner-b to finish the batch", interval=0.2)
            assert done.status == "completed", done
            assert done.request_counts.total == LINES and done.request_counts.completed == LINES
            out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
            assert [x["custom_id"] for x in out] == [f"c{i}" for i in range(LINES)]  # none lost, none twice
            assert done.error_file_id is None
            assert all(x["response"]["body"]["choices"][0]["message"]["content"] == f"line {i}"
                       for i, x in enumerate(out))
            # each line completed by exactly one runner, and charged once: half of $0.02 each
            seen: Counter = Counter()
            for _, log in procs:
                seen.update(re.findall(r"job (job_[0-9a-f]+) completed by", log.read_text(errors="replace")))
            assert seen and max(seen.values()) == 1
            assert "runner-b" in (tmp_path / "runner-b.log").read_text()
            # every cent taken is a reservation (a settlement never charged a line twice): one per line, plus any a
            # killed driver had reserved for lines it had not yet queued (docs/batches.md: at most a window's worth,
            # refunded by hand); those lines were admitted again and ran once
            after = wallet(srv, org["id"])
            reserves = [e for e in after["ledger"] if e["kind"] == "reserve"]
            assert not [e for e in after["ledger"] if e["kind"] == "charge"]
            assert before - after["balance_cents"] == len(reserves)
            assert LINES <= len(reserves) <= LINES + knobs["batch_concurrency"], len(reserves)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_local_embedding_lines_share_model_calls(tmp_path: Path, database_url: str) -> None:
    """A window's lines for a model that batches dynamically are claimed together, so they reach the embedder's
    batcher at once: each model call embeds many lines, though the runner works on only two jobs at a time."""
    url = None if database_url.startswith("sqlite") else database_url
    fast = {k: v for k, v in FAST.items() if k != "builtin_models"}
    with quiet_server(tmp_path, url, [], **fast, builtin_models=True, auth_cache_ttl=0.0, job_concurrency=2,
                      batch_concurrency=32) as srv:
        org = create_org(srv, "pro")
        top_up(srv, org["id"], 1000)
        client = openai.OpenAI(api_key=create_key(srv, org["id"]), base_url=srv.v1, max_retries=0)
        client.embeddings.create(model="all-minilm-l6-v2", input="warm up")  # the model loads before the batch
        batcher = srv.app.state.ctx.router.backends["all-minilm-l6-v2/local"].batcher
        calls, items = batcher.batches_run, batcher.items_run
        lines = 96
        data = b"".join(json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                                    "body": {"model": "all-minilm-l6-v2", "input": f"sentence number {i}"}}
                                   ).encode() + b"\n" for i in range(lines))
        batch = client.batches.create(input_file_id=client.files.create(file=("in.jsonl", data), purpose="batch").id,
                                      endpoint="/v1/embeddings", completion_window="24h")

        def finished() -> Any:
            b = client.batches.retrieve(batch.id)
            return b if b.status in ("completed", "failed", "expired", "cancelled") else None
        done = wait_until(finished, 120, "the embeddings batch to end", interval=0.1)
        assert done.status == "completed" and done.request_counts.completed == lines, done
        assert batcher.items_run - items == lines
        # ungrouped, this batch took 89 model calls on SQLite and 31 on PostgreSQL; grouped, 3 or 4
        model_calls = batcher.batches_run - calls
        assert model_calls <= lines // 8, f"{model_calls} model calls for {lines} lines"
