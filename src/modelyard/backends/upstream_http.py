"""What every HTTP upstream shares: one pooled client per base URL, timeouts, and failures mapped once, here."""

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
from .base import BaseBackend

log = logging.getLogger(__name__)


def shared_session(shared: dict, base_url: str, *, limit: int) -> aiohttp.ClientSession:
    """One connection pool per upstream base URL, however many deployments point at it."""
    key = ("aiohttp", base_url)
    session = shared.get(key)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, keepalive_timeout=60, ttl_dns_cache=300)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        shared[key] = session
    return session


def upstream_message(body: bytes) -> tuple[str, str | None]:
    """The human part of an upstream error body (OpenAI, Anthropic and Gemini all nest it under 'error')."""
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
    message, param = upstream_message(body)
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


class HTTPUpstream(BaseBackend):
    """Subclasses set headers and URLs and convert bodies; the transport and its failures are handled here."""

    def __init__(self, deployment: Deployment, *, shared: dict) -> None:
        cfg = deployment.config
        if not cfg.base_url:
            raise ValueError(f"deployment {deployment.key} needs base_url")
        self.deployment = deployment
        self.name = deployment.key
        self.base_url = cfg.base_url.rstrip("/")
        self.upstream_model = cfg.model or deployment.model_id
        self._session = shared_session(shared, self.base_url, limit=max(cfg.max_concurrency, 8))
        self._headers = {"Content-Type": "application/json", **self.auth_headers(cfg.api_key), **cfg.headers}
        self._timeout = aiohttp.ClientTimeout(total=cfg.timeout, sock_connect=cfg.connect_timeout)
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.timeout)
        self._first_byte = cfg.first_byte_timeout

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @contextlib.asynccontextmanager
    async def _post(self, url: str, body: bytes, *, stream: bool) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST; connection errors and timeouts become UpstreamError, HTTP errors the mapped error."""
        cm = self._session.post(url, data=body, headers=self._headers,
                                timeout=self._stream_timeout if stream else self._timeout)
        limit = asyncio.timeout(self._first_byte)
        try:
            try:
                async with limit:
                    resp = await cm.__aenter__()
            except TimeoutError as exc:
                if limit.expired():
                    raise UpstreamError(f"Upstream {self.name} sent nothing within {self._first_byte:g} s.",
                                        code="upstream_timeout") from exc
                raise
            try:
                if resp.status != 200:
                    raise map_upstream_status(resp.status, await resp.read(), resp.headers, self.name)
                if stream and "event-stream" not in resp.headers.get("content-type", ""):
                    raise UpstreamError(f"Upstream {self.name} answered a stream request with "
                                        f"'{resp.headers.get('content-type', 'no content type')}', not server-sent events.")
                yield resp
            finally:
                resp.release()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UpstreamError(f"Upstream {self.name} failed: {type(exc).__name__} {exc}".strip()) from exc

    async def post_json(self, url: str, payload: dict[str, Any] | bytes) -> dict[str, Any]:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        async with self._post(url, body, stream=False) as resp:
            raw = await resp.read()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"Upstream {self.name} returned a body that is not JSON.") from exc
        if not isinstance(data, dict):
            raise UpstreamError(f"Upstream {self.name} returned an unexpected body.")
        return data

    async def post_events(self, url: str, payload: dict[str, Any] | bytes) -> AsyncIterator[tuple[str | None, bytes]]:
        """Server-sent events of a streaming POST, as (event, data) pairs, relayed as they arrive."""
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        seen = False
        try:
            async with self._post(url, body, stream=True) as resp:
                decoder = SSEDecoder()
                async for piece in resp.content.iter_any():
                    for event in decoder.feed(piece):
                        seen = True
                        yield event
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UpstreamError(f"Upstream {self.name} failed mid-stream: {type(exc).__name__} {exc}".strip()) from exc
        if not seen:
            raise UpstreamError(f"Upstream {self.name} closed the stream without sending anything.")
