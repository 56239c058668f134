"""A SearXNG-compatible JSON search endpoint (GET /search?q=..&format=json), for the hosted web_search tool."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class SearchControl:
    mode: str = "ok"  # ok | error500 | garbage
    queries: list[str] = field(default_factory=list)
    formats: list[str | None] = field(default_factory=list)


def create_search_stub(control: SearchControl) -> Starlette:
    async def search(request: Request) -> Response:
        q = request.query_params.get("q", "")
        control.queries.append(q)
        control.formats.append(request.query_params.get("format"))
        if control.mode == "error500":
            return JSONResponse({"error": "engine exploded"}, status_code=500)
        if control.mode == "garbage":
            return Response(b"<html>captcha</html>", media_type="text/html")
        slug = "-".join(q.lower().split())[:40] or "empty"
        results = [{"url": f"https://example.org/{slug}/{k}", "title": f"Result {k} for {q}",
                    "content": f"Snippet {k}: facts about {q}.", "engine": "stub", "score": 1.0 / k}
                   for k in range(1, 9)]
        return JSONResponse({"query": q, "number_of_results": len(results), "results": results, "answers": [],
                             "suggestions": [], "unresponsive_engines": []})

    return Starlette(routes=[Route("/search", search)])
