"""OpenAI-compatible upstream (OpenAI, vLLM, Ollama, another gateway): requests and streams pass through."""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Callable

import orjson

from ..catalog import Deployment
from ..errors import UpstreamError
from ..protocols.sse import SSEBlocks, SSEDecoder
from ..protocols.openai.schema import ChatRequest
from ..types import ChatResponse, RawJSON, RawSSE, Task
from ..protocols.openai.completions import CompletionRequest
from ..protocols.openai.media import AudioInput, AudioResult, ImageEdit, ImageResult
from .media_http import images_from, multipart, upload_image
from .base import ChatChunk
from .transport import TransportError
from .upstream_http import HTTPUpstream, upstream_message
from .via_chat import complete_via_chat, stream_via_chat

log = logging.getLogger(__name__)


class OpenAIUpstream(HTTPUpstream):
    """Chat, and the JSON tasks OpenAI-compatible servers offer (OpenAI: embeddings, moderations; vLLM: also
    rerank and score). Which of them a given upstream really serves is the operator's to declare in the model's
    `type`/`tasks`; an upstream that lacks one answers 404, which surfaces as a 502.

    Completions go to the upstream's /completions as they are (echo, suffix, logprobs: the upstream decides), unless
    the deployment sets `options: {completions: chat}`, or the upstream answers 404 there (OpenAI's chat models do):
    from then on this deployment serves completions through chat (see via_chat.py)."""

    tasks = frozenset({Task.CHAT, Task.COMPLETION, Task.EMBEDDING, Task.RERANK, Task.SCORE, Task.MODERATION,
                       Task.SPEECH, Task.TRANSCRIPTION, Task.TRANSLATION, Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE})
    _JSON_TASKS = {Task.EMBEDDING: "/embeddings", Task.RERANK: "/rerank", Task.SCORE: "/score",
                   Task.MODERATION: "/moderations", Task.PII: "/pii"}

    async def _json(self, task: Task, req: Any, model: str) -> dict[str, Any]:
        payload = req.model_dump(mode="json", exclude_unset=True)
        payload["model"] = self.upstream_model
        data = await self.post_json(self.base_url + self._JSON_TASKS[task], payload)
        data["model"] = model
        return data

    def __init__(self, deployment: Deployment, *, shared: dict) -> None:
        super().__init__(deployment, shared=shared)
        mode = deployment.config.options.get("completions", "native")
        if mode not in ("native", "chat"):
            raise ValueError(f"deployment {deployment.key}: options.completions must be 'native' or 'chat'")
        self.native_completions = mode == "native"

    async def embed(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.EMBEDDING, req, model)

    async def rerank(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.RERANK, req, model)

    async def score(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.SCORE, req, model)

    async def moderate(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.MODERATION, req, model)

    # ---------------------------------------------------------------- media, as OpenAI's API carries it

    async def speech(self, req: Any, model: str) -> AudioResult:
        payload = req.model_dump(mode="json", exclude_unset=True)
        payload["model"] = self.upstream_model
        data, content_type = await self.post_body(self.base_url + "/audio/speech", orjson.dumps(payload))
        return AudioResult(data=data, content_type=content_type)

    async def transcribe(self, req: AudioInput, model: str) -> dict[str, Any]:
        return await self._audio("/audio/transcriptions", req)

    async def translate(self, req: AudioInput, model: str) -> dict[str, Any]:
        return await self._audio("/audio/translations", req)

    async def _audio(self, path: str, req: AudioInput) -> dict[str, Any]:
        # verbose_json carries everything the route renders (text, srt, vtt, segments, words)
        fields: list[tuple[str, str]] = [("model", self.upstream_model), ("response_format", "verbose_json"),
                                         ("temperature", str(req.temperature))]
        fields += [("timestamp_granularities[]", g) for g in req.timestamp_granularities]
        if req.language and path.endswith("transcriptions"):
            fields.append(("language", req.language))
        if req.prompt:
            fields.append(("prompt", req.prompt))
        body, content_type = multipart(fields, [("file", req.filename or "audio", req.data)])
        data = await self.post_json(self.base_url + path, body, content_type)
        data.setdefault("segments", [{"start": 0.0, "end": float(data.get("duration") or 0), "text": data.get("text", "")}])
        return data

    async def generate_image(self, req: Any, model: str) -> ImageResult:
        payload = req.model_dump(mode="json", exclude_unset=True)
        payload.update(model=self.upstream_model, response_format="b64_json")
        return images_from(await self.post_json(self.base_url + "/images/generations", payload), self.name)

    async def edit_image(self, req: ImageEdit, model: str) -> ImageResult:
        fields = [("model", self.upstream_model), ("prompt", req.prompt), ("n", str(req.n)), ("size", req.size),
                  ("response_format", "b64_json")]
        files = [("image", *upload_image(req.image, "image"))]
        if req.mask is not None:
            files.append(("mask", *upload_image(req.mask, "mask")))
        body, content_type = multipart(fields, files)
        return images_from(await self.post_json(self.base_url + "/images/edits", body, content_type), self.name)

    def _body(self, req: ChatRequest | CompletionRequest) -> bytes:
        # the client's own JSON, unknown fields and all; only `model` changes (a plain dict round trip is several
        # times cheaper than dumping the validated model)
        payload = orjson.loads(req._raw) if req._raw is not None else req.model_dump(mode="json", exclude_unset=True)
        payload["model"] = self.upstream_model
        return orjson.dumps(payload)

    async def chat(self, req: ChatRequest, model: str) -> ChatResponse:
        data = await self.post_json(self.base_url + "/chat/completions", self._body(req))
        if "choices" not in data:
            raise UpstreamError(f"Upstream {self.name} returned an unexpected body.")
        data["model"] = model
        return data

    def _no_native_completions(self, exc: UpstreamError) -> bool:
        if exc.code != "upstream_not_found":
            return False
        log.warning("%s has no /completions (404); serving completions through chat from now on", self.name)
        self.native_completions = False
        return True

    async def complete(self, req: CompletionRequest, model: str) -> dict[str, Any]:
        if self.native_completions:
            try:
                data = await self.post_json(self.base_url + "/completions", self._body(req))
            except UpstreamError as exc:
                if not self._no_native_completions(exc):
                    raise
            else:
                if "choices" not in data:
                    raise UpstreamError(f"Upstream {self.name} returned an unexpected body.")
                data["model"] = model
                return data
        return await complete_via_chat(req, model, lambda chat: self.chat(chat, model))

    async def complete_stream(self, req: CompletionRequest, model: str) -> AsyncIterator[ChatChunk]:
        if self.native_completions:
            started = False
            try:
                async for chunk in self._relay(self.base_url + "/completions", self._body(req), model):
                    started = True
                    yield chunk
                return
            except UpstreamError as exc:
                if started or not self._no_native_completions(exc):
                    raise

        async def open_chat(chat: ChatRequest) -> AsyncIterator[ChatChunk]:
            return self.chat_stream(chat, model)

        async for chunk in stream_via_chat(req, model, open_chat):
            yield chunk

    def chat_stream(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        return self._relay(self.base_url + "/chat/completions", self._body(req), model)

    def chat_stream_sse(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        """For a client that reads OpenAI's SSE itself: whole blocks of the upstream's events (RawSSE), renamed."""
        return self._relay_blocks(self.base_url + "/chat/completions", self._body(req), self._renamer(model))

    async def _relay(self, url: str, body: bytes, model: str) -> AsyncIterator[ChatChunk]:
        # chunks are relayed as the upstream's own bytes; only the model name is swapped, without a re-parse
        rename = self._renamer(model)
        async for _event, data in self.post_events(url, body):
            chunk = self._event(data, rename)
            if chunk is None:
                return
            yield chunk

    def _renamer(self, model: str) -> tuple[bytes, bytes, bytes] | None:
        if self.upstream_model == model:
            return None
        old_a = orjson.dumps({"model": self.upstream_model})[1:-1]
        return old_a, old_a.replace(b'":"', b'": "', 1), orjson.dumps({"model": model})[1:-1]

    def _event(self, data: bytes, rename: tuple[bytes, bytes, bytes] | None) -> RawJSON | None:
        """One event's data as a chunk; None at [DONE]; an error event raises."""
        if data == b"[DONE]":
            return None
        if data.startswith(b'{"error"'):
            raise UpstreamError(f"Upstream {self.name} failed mid-stream: {upstream_message(data)[0]}")
        if rename:
            data = data.replace(rename[0], rename[2], 1).replace(rename[1], rename[2], 1)
        return RawJSON(data)

    async def _relay_blocks(self, url: str, body: bytes, rename: tuple[bytes, bytes, bytes] | None
                            ) -> AsyncIterator[ChatChunk]:
        """Whole events as they arrived, renamed in bulk: one write per upstream read, not one per event.

        The transport is read here (not through `post_stream`) and each read is handled by `_Blocks.feed`, plain
        code: between the transport and the call path there is this one generator for every block relayed.
        """
        blocks = _Blocks(rename, self._event)
        try:
            async with self._post(url, body, stream=True) as resp:
                pieces = resp.iter_any(idle_timeout=self._timeout)
                try:
                    async for piece in pieces:
                        for chunk in blocks.feed(piece):
                            yield chunk
                        if blocks.ended:
                            break
                finally:
                    await pieces.aclose()  # now, not when the collector finds it (its idle timer goes with it)
        except TransportError as exc:
            raise UpstreamError(f"Upstream {self.name} failed mid-stream: {exc}") from exc
        blocks.finish(self.name)


class _Blocks:
    """What the raw relay does with each read: the whole events in it as one RawSSE block, renamed in bulk.

    A block holding [DONE] or an error event is taken apart event by event, so the stream ends (`ended`) or fails
    exactly where it would on the per-event path: the events before an error go out, then `finish` raises it.
    """

    __slots__ = ("_cut", "_rename", "_event", "sent", "ended", "_error")

    def __init__(self, rename: tuple[bytes, bytes, bytes] | None,
                 event: Callable[[bytes, tuple[bytes, bytes, bytes] | None], RawJSON | None]) -> None:
        self._cut = SSEBlocks()
        self._rename = rename
        self._event = event  # one event's data as a chunk; None at [DONE]; raises on an error event
        self.sent = False
        self.ended = False
        self._error: UpstreamError | None = None

    def feed(self, piece: bytes) -> tuple[ChatChunk, ...]:
        block = self._cut.feed(piece)
        if not block:
            return ()
        self.sent = True
        done = _done_at(block)
        if done < 0 and b'{"error"' not in block:  # the usual block: events, nothing more
            return (RawSSE(_renamed(block, self._rename)),)
        if done > 0 and b'{"error"' not in block:  # the usual last block: events, then [DONE]
            self.ended = True
            return (RawSSE(_renamed(block[:done], self._rename)),)
        out: list[ChatChunk] = []
        for _event, data in SSEDecoder().feed(block):
            try:
                chunk = self._event(data, self._rename)
            except UpstreamError as exc:
                self._error = exc
                chunk = None
            if chunk is None:
                self.ended = True
                break
            out.append(chunk)
        return tuple(out)

    def finish(self, name: str) -> None:
        """The stream is over: raise the error event it ended with, or that it never sent a whole event."""
        if self._error is not None:
            raise self._error
        if not self.sent:
            raise UpstreamError(f"Upstream {name} closed the stream without sending a whole event.")


def _renamed(block: bytes, rename: tuple[bytes, bytes, bytes] | None) -> bytes:
    return block.replace(rename[0], rename[2]).replace(rename[1], rename[2]) if rename else block


def _done_at(block: bytes) -> int:
    """Where the `data: [DONE]` event starts in a block of whole events, or -1."""
    at = block.find(b"[DONE]")
    if at < 0:
        return -1
    start = block.rfind(b"\n\n", 0, at) + 2 if block.rfind(b"\n\n", 0, at) >= 0 else 0
    return start if block[start:at].rstrip() == b"data:" else -1

