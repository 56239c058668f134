"""What every HTTP upstream shares: one pooled client per base URL, timeouts, and failures mapped once, here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

import orjson

from ..catalog import Deployment
from ..errors import InvalidRequest, ModelyardError, Overloaded, RateLimited, UpstreamError
from ..protocols.sse import SSEDecoder
from ..tracing import OUTGOING
from .base import BaseBackend
from .transport import Pool, Response, TransportError

log = logging.getLogger(__name__)


def shared_pool(shared: dict, base_url: str, *, limit: int) -> Pool:
    """One connection pool per upstream base URL, however many deployments point at it."""
    key = ("pool", base_url)
    pool = shared.get(key)
    if pool is None or pool.closed:
        pool = Pool(base_url, limit=limit)
        shared[key] = pool
    return pool


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
    """Translate an upstream failure once, here, into the error the client sees (its `upstream_status` kept for
    logs and traces)."""
    err = _mapped(status, body, headers, name)
    err.upstream_status = status
    return err


def _mapped(status: int, body: bytes, headers: Any, name: str) -> ModelyardError:
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
        return UpstreamError(f"Upstream {name} answered 404: {message}", code="upstream_not_found")
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
        self._pool = shared_pool(shared, self.base_url, limit=max(cfg.max_concurrency, 8))
        self._headers = {"Content-Type": "application/json", "Accept": "*/*", **self.auth_headers(cfg.api_key),
                         **cfg.headers}
        self._timeout = cfg.timeout
        self._connect_timeout = cfg.connect_timeout
        self._first_byte = cfg.first_byte_timeout

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @contextlib.asynccontextmanager
    async def _post(self, url: str, body: bytes, *, stream: bool, content_type: str | None = None
                    ) -> AsyncIterator[Response]:
        """POST; connection failures and timeouts become UpstreamError, HTTP errors the mapped error."""
        path = url[len(self.base_url):]
        headers = self._headers if content_type is None else {**self._headers, "Content-Type": content_type}
        trace = OUTGOING.get()  # the router's attempt span, when tracing: the trace continues upstream
        if trace is not None:
            headers = {**headers, **trace}
        limit = asyncio.timeout(self._first_byte)
        try:
            async with limit:
                resp = await self._pool.post(path, body, headers, connect_timeout=self._connect_timeout)
        except TimeoutError as exc:
            raise UpstreamError(f"Upstream {self.name} sent nothing within {self._first_byte:g} s.",
                                code="upstream_timeout") from exc
        except TransportError as exc:
            raise UpstreamError(f"Upstream {self.name} failed: {exc}") from exc
        try:
            if resp.status != 200:
                raise map_upstream_status(resp.status, await self._read(resp), resp.headers, self.name)
            if stream and "event-stream" not in resp.headers.get("content-type", ""):
                raise UpstreamError(f"Upstream {self.name} answered a stream request with "
                                    f"'{resp.headers.get('content-type', 'no content type')}', not server-sent events.")
            yield resp
        finally:
            resp.release()

    async def _read(self, resp: Response) -> bytes:
        try:
            return await resp.read()
        except TransportError as exc:
            raise UpstreamError(f"Upstream {self.name} failed: {exc}") from exc

    async def post_body(self, url: str, body: bytes, content_type: str | None = None) -> tuple[bytes, str]:
        """POST and read the whole answer: (body, its content type)."""
        try:
            async with asyncio.timeout(self._timeout):
                async with self._post(url, body, stream=False, content_type=content_type) as resp:
                    return await self._read(resp), resp.headers.get("content-type", "application/octet-stream")
        except TimeoutError as exc:
            raise UpstreamError(f"Upstream {self.name} did not answer within {self._timeout:g} s.",
                                code="upstream_timeout") from exc

    async def post_json(self, url: str, payload: dict[str, Any] | bytes, content_type: str | None = None
                        ) -> dict[str, Any]:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        raw, _ = await self.post_body(url, body, content_type)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"Upstream {self.name} returned a body that is not JSON.") from exc
        if not isinstance(data, dict):
            raise UpstreamError(f"Upstream {self.name} returned an unexpected body.")
        return data

    async def post_stream(self, url: str, payload: dict[str, Any] | bytes) -> AsyncIterator[bytes]:
        """The body of a streaming POST, piece by piece as it arrives (at least one piece, or UpstreamError)."""
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        seen = False
        try:
            async with self._post(url, body, stream=True) as resp:
                async for piece in resp.iter_any(idle_timeout=self._timeout):
                    seen = True
                    yield piece
        except TransportError as exc:
            raise UpstreamError(f"Upstream {self.name} failed mid-stream: {exc}") from exc
        if not seen:
            raise UpstreamError(f"Upstream {self.name} closed the stream without sending anything.")

    async def post_events(self, url: str, payload: dict[str, Any] | bytes) -> AsyncIterator[tuple[str | None, bytes]]:
        """Server-sent events of a streaming POST, as (event, data) pairs, relayed as they arrive."""
        decoder = SSEDecoder()
        seen = False
        async for piece in self.post_stream(url, payload):
            for event in decoder.feed(piece):
                seen = True
                yield event
        if not seen:
            raise UpstreamError(f"Upstream {self.name} closed the stream without sending an event.")
