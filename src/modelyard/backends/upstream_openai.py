"""OpenAI-compatible upstream (OpenAI, vLLM, Ollama, another gateway): pass-through over one pooled client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

import aiohttp
import orjson

from ..catalog import Deployment
from ..errors import InvalidRequest, ModelyardError, Overloaded, RateLimited, UpstreamError
from ..protocols.sse import SSEDecoder
from ..types import ChatRequest, ChatResponse, RawJSON, Task
from .base import BaseBackend, ChatChunk

log = logging.getLogger(__name__)


def shared_session(shared: dict, base_url: str, *, limit: int) -> aiohttp.ClientSession:
    """One connection pool per upstream base URL, however many deployments point at it."""
    key = ("aiohttp", base_url)
    session = shared.get(key)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, keepalive_timeout=60, ttl_dns_cache=300)
        session = aiohttp.ClientSession(connector=connector, json_serialize=lambda o: orjson.dumps(o).decode(), auto_decompress=True)
        shared[key] = session
    return session


def _upstream_message(body: bytes) -> tuple[str, str | None]:
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            return str(err.get("message") or err), err.get("param")
        if isinstance(err, str):
            return err, None
        if isinstance(data, dict) and "detail" in data:
            return str(data["detail"]), None
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return body[:300].decode("utf-8", "replace") or "no body", None


def map_upstream_status(status: int, body: bytes, headers: Any, name: str) -> ModelyardError:
    """Translate an upstream failure once, here, into the error the client sees."""
    message, param = _upstream_message(body)
    if status in (400, 413, 422):
        return InvalidRequest(message, param=param, code="upstream_rejected_request")
    if status == 429:
        retry = headers.get("retry-after") if headers is not None else None
        try:
            retry_after = float(retry) if retry else 1.0
        except ValueError:
            retry_after = 1.0
        return RateLimited(f"Upstream {name} is rate limiting: {message}", code="upstream_rate_limited", retry_after=retry_after)
    if status in (503, 529):
        return Overloaded(f"Upstream {name} is overloaded: {message}", retry_after=1.0)
    if status in (401, 403):
        return UpstreamError(f"Upstream {name} rejected this deployment's credentials ({status}).")
    if status == 404:
        return UpstreamError(f"Upstream {name} answered 404: {message}")
    return UpstreamError(f"Upstream {name} failed with HTTP {status}: {message}")


class OpenAIUpstream(BaseBackend):
    tasks = frozenset({Task.CHAT})

    def __init__(self, deployment: Deployment, *, shared: dict) -> None:
        cfg = deployment.config
        if not cfg.base_url:
            raise ValueError(f"deployment {deployment.key} needs base_url")
        self.name = deployment.key
        self.base_url = cfg.base_url.rstrip("/")
        self.upstream_model = cfg.model or deployment.model_id
        self._session = shared_session(shared, self.base_url, limit=max(cfg.max_concurrency, 8))
        self._headers = {"Content-Type": "application/json", **cfg.headers}
        if cfg.api_key:
            self._headers["Authorization"] = f"Bearer {cfg.api_key}"
        self._timeout = aiohttp.ClientTimeout(total=cfg.timeout, sock_connect=cfg.connect_timeout)
        self._first_byte = cfg.first_byte_timeout
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.timeout)

    @contextlib.asynccontextmanager
    async def _post(self, url: str, body: bytes, timeout: aiohttp.ClientTimeout) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST with the deployment's first-byte limit on the wait for response headers."""
        cm = self._session.post(url, data=body, headers=self._headers, timeout=timeout)
        limit = asyncio.timeout(self._first_byte)
        try:
            async with limit:
                resp = await cm.__aenter__()
        except TimeoutError as exc:
            if not limit.expired():
                raise  # aiohttp's own timeouts are mapped by the caller
            raise UpstreamError(f"Upstream {self.name} sent nothing within {self._first_byte:g} s.",
                                code="upstream_timeout") from exc
        try:
            yield resp
        finally:
            resp.release()

    def _body(self, req: ChatRequest) -> bytes:
        payload = req.model_dump(mode="json", exclude_unset=True)
        payload["model"] = self.upstream_model
        return orjson.dumps(payload)

    async def chat(self, req: ChatRequest, model: str) -> ChatResponse:
        url = self.base_url + "/chat/completions"
        try:
            async with self._post(url, self._body(req), self._timeout) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise map_upstream_status(resp.status, body, resp.headers, self.name)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UpstreamError(f"Upstream {self.name} unreachable: {type(exc).__name__} {exc}".strip()) from exc
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"Upstream {self.name} returned a body that is not JSON.") from exc
        if not isinstance(data, dict) or "choices" not in data:
            raise UpstreamError(f"Upstream {self.name} returned an unexpected body.")
        data["model"] = model
        return data

    async def chat_stream(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        url = self.base_url + "/chat/completions"
        rename = self.upstream_model != model
        old_a = orjson.dumps({"model": self.upstream_model})[1:-1]
        old_b = old_a.replace(b'":"', b'": "', 1)
        new = orjson.dumps({"model": model})[1:-1]
        try:
            async with self._post(url, self._body(req), self._stream_timeout) as resp:
                if resp.status != 200:
                    raise map_upstream_status(resp.status, await resp.read(), resp.headers, self.name)
                if "event-stream" not in resp.headers.get("content-type", ""):
                    raise UpstreamError(f"Upstream {self.name} answered a stream request with "
                                        f"'{resp.headers.get('content-type', 'no content type')}', not server-sent events.")
                decoder = SSEDecoder()
                seen = False
                async for piece in resp.content.iter_any():
                    for _event, data in decoder.feed(piece):
                        if data == b"[DONE]":
                            return
                        seen = True
                        if data.startswith(b'{"error"'):
                            message, _ = _upstream_message(data)
                            raise UpstreamError(f"Upstream {self.name} failed mid-stream: {message}")
                        if rename:
                            data = data.replace(old_a, new, 1).replace(old_b, new, 1)
                        yield RawJSON(data)
                if not seen:
                    raise UpstreamError(f"Upstream {self.name} closed the stream without sending anything.")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UpstreamError(f"Upstream {self.name} failed: {type(exc).__name__} {exc}".strip()) from exc
