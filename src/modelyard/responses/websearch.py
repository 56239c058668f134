"""The hosted web_search tool's provider: a SearXNG-compatible JSON search endpoint, configured by URL."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from ..errors import InvalidRequest, UpstreamError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SearchHit:
    title: str
    url: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"title": self.title, "url": self.url, "content": self.content}


class SearchProvider(Protocol):
    configured: bool

    async def search(self, query: str) -> list[SearchHit]: ...

    async def aclose(self) -> None: ...


class NotConfigured:
    """What runs when no search URL is set: every search is the client's clear 400, not a silent empty result."""

    configured = False

    async def search(self, query: str) -> list[SearchHit]:
        raise InvalidRequest("Web search is not configured on this server (the operator sets 'web_search_url'); "
                             "remove the web_search tool or ask for it to be enabled.", param="tools",
                             code="web_search_not_configured")

    async def aclose(self) -> None:
        return None


class SearxngSearch:
    """GET <url>?q=<query>&format=json; answers {"results": [{"title", "url", "content"}, ...]} as SearXNG does.

    The URL is the operator's own configuration (a search service they run), so it may be on a private network;
    the result URLs are only shown to the model and the client, never fetched.
    """

    configured = True

    def __init__(self, url: str, *, timeout: float = 10.0, max_results: int = 5) -> None:
        self.url = url
        self.timeout = timeout
        self.max_results = max_results
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # created on first use, inside the server's loop
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def search(self, query: str) -> list[SearchHit]:
        try:
            async with self._client().get(self.url, params={"q": query, "format": "json"},
                                          headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise UpstreamError(f"The web search service answered HTTP {resp.status}.",
                                        code="web_search_failed")
                data: Any = await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise UpstreamError(f"The web search service failed: {type(exc).__name__}: {exc}",
                                code="web_search_failed") from exc
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise UpstreamError("The web search service returned no 'results' list.", code="web_search_failed")
        hits: list[SearchHit] = []
        for r in results:
            if isinstance(r, dict) and isinstance(r.get("url"), str) and r["url"]:
                hits.append(SearchHit(title=str(r.get("title") or ""), url=r["url"], content=str(r.get("content") or "")))
            if len(hits) >= self.max_results:
                break
        return hits

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def build_search(settings: Any) -> SearchProvider:
    if not settings.web_search_url:
        return NotConfigured()
    return SearxngSearch(settings.web_search_url, timeout=settings.web_search_timeout,
                         max_results=settings.web_search_max_results)
