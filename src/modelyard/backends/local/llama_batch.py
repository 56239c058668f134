"""Parallel sequences on one llama.cpp context: several requests decode together, one token each per step.

llama-cpp-python's `Llama` runs one sequence at a time. Its low-level API has what llama.cpp's own server uses:
a context with `n_seq_max` sequences, each with a KV stream of its own, and a `llama_batch` whose tokens each name
their sequence. One `llama_decode` then computes the next token of every running request at once: the weights are
read once per step rather than once per request, so the total tokens/s rises with load (by how much depends on
the weights' type: see docs/performance.md, "Local models").

The loop (`BatchEngine._loop`) runs on the event loop; each step's decode and sampling run on the backend's model
thread (one hand-off per step for all sequences, not one per token per request). Each slot has a KV stream of its
own, `n_ctx` cells (the deployment's context): a request that fits the deployment fits a slot, and a running
sequence never finds its cache full. Requests past the slots wait for one, first come first served.

Sampling mirrors `Llama._init_sampler` (penalties, then greedy at temperature 0, else top-k, typical, top-p, min-p,
temperature and a seeded draw), all in llama.cpp's sampler chain: no Python per vocabulary entry, where the
`Llama` path with our token-counting logits processor copied all 49,152 logits through numpy for every token.
Requests this path does not cover (a grammar, logit_bias) keep the `Llama` path.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import logging
import random
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from .llama import _find_stop, _partial_stop  # the same stop handling as the one-sequence path

log = logging.getLogger(__name__)

LAST_N = 64  # Llama's last_n_tokens_size: the window the repeat/frequency/presence penalties look at


@dataclass
class _Seq:
    tokens: list[int]  # the prompt, then what is left of it to decode
    max_tokens: int
    stops: tuple[str, ...]  # every stop string, matched here
    match_stops: tuple[str, ...]  # those the caller wants named when they end the answer
    sampling: dict[str, Any]
    queue: asyncio.Queue
    reserve: int
    slot: int = -1
    pos: int = 0  # next position in the sequence
    sampler: Any = None
    n: int = 0  # tokens sampled
    held: str = ""
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="ignore"))
    cancelled: bool = False
    done: bool = False
    batch_index: int = -1  # where this sequence's logits are in the step's batch


class BatchEngine:
    """Continuous batching over `slots` sequences of one llama.cpp context built from the loaded model."""

    def __init__(self, llm: Any, *, slots: int, n_ctx: int, n_threads: int, n_threads_batch: int,
                 run: Callable[..., Any], on_token: Callable[[int], None]) -> None:
        import llama_cpp as lc

        self.lc = lc
        self.llm = llm
        self.slots = slots
        self.n_ctx = n_ctx
        self.run = run  # runs a function on the model's thread, awaitable
        self.on_token = on_token
        params = lc.llama_context_default_params()
        params.n_ctx = n_ctx * slots
        params.n_batch = min(512, n_ctx)
        params.n_ubatch = min(512, n_ctx)
        params.n_seq_max = slots
        # a KV stream per sequence, n_ctx cells each. With one unified pool (kv_unified) this llama.cpp gave a
        # sequence decoded beside others another answer than it gave alone, from the first token on (greedy,
        # three copies of one prompt: two answered differently); with a stream each, every one answers as alone.
        params.kv_unified = False
        params.n_threads = n_threads
        params.n_threads_batch = n_threads_batch
        self.n_batch = params.n_batch
        self.ctx = lc.llama_init_from_model(llm._model.model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create the batched context")
        self.mem = lc.llama_get_memory(self.ctx)
        self.vocab = llm._model.vocab
        self.n_vocab = llm.n_vocab()
        self.batch = lc.llama_batch_init(self.n_batch, 0, 1)
        self.piece = (ctypes.c_char * 256)()
        self.bos = [llm.token_bos()] if llm._model.add_bos_token() and llm.token_bos() != -1 else []
        self.waiting: list[_Seq] = []
        self.running: list[_Seq] = []
        self.free_slots = list(range(slots))
        self.reserved = 0
        self._loop_task: asyncio.Task | None = None
        self.steps = 0
        self.max_running = 0  # the most sequences one step has carried (for tests and the bench)

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        lc = self.lc
        for seq in getattr(self, "running", []) + getattr(self, "waiting", []):
            if seq.sampler:
                lc.llama_sampler_free(seq.sampler)
                seq.sampler = None
        if getattr(self, "batch", None) is not None:
            lc.llama_batch_free(self.batch)
            self.batch = None
        if getattr(self, "ctx", None):
            lc.llama_free(self.ctx)
            self.ctx = None

    # ------------------------------------------------------------------ requests (event loop)

    def prompt_tokens(self, prompt: str) -> list[int]:
        """The tokens `create_completion` feeds for a text prompt: BOS if the model adds one, then the text with
        special tokens parsed."""
        return self.bos + self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def fits(self, n_prompt: int, max_tokens: int) -> bool:
        return n_prompt + max_tokens <= self.n_ctx

    async def generate(self, tokens: list[int], max_tokens: int, stops: tuple[str, ...], match_stops: tuple[str, ...],
                       sampling: dict[str, Any]) -> AsyncIterator[tuple[str, str | None, int, str | None]]:
        """Yields (text piece, finish reason or None, tokens sampled so far, matched stop) as `_generate` does."""
        seq = _Seq(tokens=list(tokens), max_tokens=max_tokens, stops=stops, match_stops=match_stops,
                   sampling=sampling, queue=asyncio.Queue(), reserve=len(tokens) + max_tokens)
        self.waiting.append(seq)
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.ensure_future(self._loop())
        try:
            while True:
                items = await seq.queue.get()
                if isinstance(items, BaseException):
                    raise items
                for item in items:
                    yield item
                    if item[1] is not None:
                        return
        finally:
            seq.cancelled = True  # the loop drops it at its next step (client gone, or finished)

    # ------------------------------------------------------------------ the loop (event loop side)

    def _admit(self) -> list[_Seq]:
        started = []
        while self.waiting and self.free_slots:
            seq = self.waiting[0]
            if seq.cancelled:
                self.waiting.pop(0)
                continue
            self.waiting.pop(0)
            seq.slot = self.free_slots.pop(0)
            self.reserved += seq.reserve
            started.append(seq)
            self.running.append(seq)
        return started

    async def _loop(self) -> None:
        try:
            await self._steps()
        except BaseException as exc:  # never leave a caller waiting on a loop that died
            if not isinstance(exc, asyncio.CancelledError):  # cancelled: the server is shutting down
                log.exception("batched llama.cpp loop failed")
            for seq in self.running + self.waiting:
                seq.done = True
                seq.queue.put_nowait(exc if isinstance(exc, Exception) else RuntimeError("generation stopped"))
            self.running.clear()
            self.waiting.clear()
            self.free_slots = list(range(self.slots))
            self.reserved = 0
            raise

    async def _steps(self) -> None:
        while True:
            gone = [s for s in self.running if s.cancelled or s.done]
            for seq in gone:
                self.running.remove(seq)
            started = self._admit()
            if gone or started:
                await self.run(self._retire_and_start, gone, started)
                for seq in gone:
                    self.free_slots.append(seq.slot)
                    self.reserved -= seq.reserve
            if not self.running:
                if not self.waiting:
                    return
                continue
            try:
                out = await self.run(self._step, list(self.running))
            except Exception as exc:  # a failed decode ends every sequence in it, with the error
                log.exception("batched llama.cpp step failed")
                for seq in self.running:
                    seq.done = True
                    seq.queue.put_nowait(exc)
                continue
            self.steps += 1
            self.max_running = max(self.max_running, len(self.running))
            for seq, items in out:
                if items:
                    seq.queue.put_nowait(items)

    # ------------------------------------------------------------------ model thread

    def _retire_and_start(self, gone: list[_Seq], started: list[_Seq]) -> None:
        lc = self.lc
        for seq in gone:
            lc.llama_memory_seq_rm(self.mem, seq.slot, -1, -1)
            if seq.sampler:
                lc.llama_sampler_free(seq.sampler)
                seq.sampler = None
        for seq in started:
            lc.llama_memory_seq_rm(self.mem, seq.slot, -1, -1)
            seq.sampler = self._sampler(seq.sampling)

    def _sampler(self, s: dict[str, Any]) -> Any:
        lc = self.lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_penalties(
            self.n_vocab, LAST_N, float(s.get("repeat_penalty", 1.0)), float(s.get("frequency_penalty", 0.0)),
            float(s.get("presence_penalty", 0.0))))
        temp = float(s.get("temperature", 0.8))
        seed = s.get("seed")
        if seed is None:
            seed = random.randint(0, 2**32 - 1)
        seed = int(seed) & 0xFFFFFFFF
        if temp < 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        elif temp == 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        else:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(int(s.get("top_k", 40))))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_typical(float(s.get("typical_p", 1.0)), 1))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(float(s.get("top_p", 0.95)), 1))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(float(s.get("min_p", 0.05)), 1))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temp))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        return chain

    def _step(self, seqs: list[_Seq]) -> list[tuple[_Seq, list[tuple[str, str | None, int, str | None]]]]:
        """One decode for every running sequence: the next token of those generating, and as much of each
        waiting prompt as fits the batch. Then sample, detokenize and match stops for each."""
        lc = self.lc
        b = self.batch
        n = 0
        budget = self.n_batch
        for seq in seqs:
            seq.batch_index = -1
            take = seq.tokens[:max(0, budget - n)]
            if not take:
                continue
            for k, tok in enumerate(take):
                b.token[n] = tok
                b.pos[n] = seq.pos + k
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = seq.slot
                b.logits[n] = 0
                n += 1
            seq.pos += len(take)
            del seq.tokens[:len(take)]
            if not seq.tokens:  # the whole input is in: its last token's logits give the next token
                b.logits[n - 1] = 1
                seq.batch_index = n - 1
        b.n_tokens = n
        if n:
            rc = lc.llama_decode(self.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
        out = []
        for seq in seqs:
            if seq.batch_index < 0:
                out.append((seq, []))
                continue
            tok = lc.llama_sampler_sample(seq.sampler, self.ctx, seq.batch_index)
            seq.n += 1
            self.on_token(1)
            out.append((seq, self._emit(seq, tok)))
        return out

    def _emit(self, seq: _Seq, tok: int) -> list[tuple[str, str | None, int, str | None]]:
        lc = self.lc
        if lc.llama_vocab_is_eog(self.vocab, tok):
            return self._finish(seq, "stop", None)
        k = lc.llama_token_to_piece(self.vocab, tok, self.piece, 256, 0, False)
        piece = seq.decoder.decode(bytes(self.piece[:k]) if k > 0 else b"")
        items: list[tuple[str, str | None, int, str | None]] = []
        if seq.stops and piece:
            seq.held += piece
            hit = _find_stop(seq.held, seq.stops)
            if hit is not None:
                at, which = hit
                if seq.held[:at]:
                    items.append((seq.held[:at], None, seq.n, None))
                seq.held = ""
                return items + self._finish(seq, "stop", which if which in seq.match_stops else None)
            keep = _partial_stop(seq.held, seq.stops)
            piece, seq.held = seq.held[:len(seq.held) - keep], seq.held[len(seq.held) - keep:]
        if piece:
            items.append((piece, None, seq.n, None))
        if seq.n >= seq.max_tokens:
            return items + self._finish(seq, "length", None)
        seq.tokens = [tok]
        return items

    def _finish(self, seq: _Seq, reason: str, matched: str | None) -> list[tuple[str, str | None, int, str | None]]:
        seq.done = True
        items: list[tuple[str, str | None, int, str | None]] = []
        tail = seq.held + seq.decoder.decode(b"", final=True)
        if tail:
            items.append((tail, None, seq.n, None))
        seq.held = ""
        items.append(("", reason, seq.n, matched))
        return items
