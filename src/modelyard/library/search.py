"""GET /api/search: the catalog's models and the org's own library items, ranked (full-text, or semantic)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequest
from ..pipeline.auth import Principal
from .embed import cosine

if TYPE_CHECKING:
    from ..catalog import Catalog, Model
    from .service import LibraryService

TYPES = ("all", "models", "library")
MODES = ("fts", "semantic")
MAX_OFFSET = 1000  # ranked results page by offset; deeper than this, narrow the query
SEMANTIC_POOL = 5000  # the org's newest embedded items that semantic search ranks
_WORDS = re.compile(r"\w+", re.UNICODE)


def rank_models(catalog: Catalog, q: str) -> list[tuple[Model, float]]:
    """The catalog is configuration held in memory (tens of models), not rows: scored here by the query's words
    found in a model's id and aliases (3), type and tasks (2), description (1)."""
    words = [w.lower() for w in _WORDS.findall(q)]
    out = []
    for model in catalog:
        names = " ".join([model.id, *model.aliases]).lower()
        kinds = " ".join([model.type, *(t.value for t in model.tasks)]).lower()
        text = (model.description or "").lower()
        score = sum(3 * (w in names) + 2 * (w in kinds) + (w in text) for w in words)
        if words and all(w in f"{names} {kinds} {text}" for w in words):
            out.append((model, float(score)))
    out.sort(key=lambda p: (-p[1], p[0].id))
    return out


def model_hit(model: Model, score: float) -> dict[str, Any]:
    return {"type": "model", "score": round(score, 4), "model": {
        "id": model.id, "type": model.type, "tasks": sorted(t.value for t in model.tasks),
        "aliases": list(model.aliases), "description": model.description, "owned_by": model.owned_by}}


async def search(library: LibraryService, principal: Principal, *, q: str, kind: str, limit: int,
                 after: str | None, mode: str, base_url: str) -> dict[str, Any]:
    """Models first (a handful, from the catalog), then library items in the engine's rank order; `after` is the
    opaque cursor a previous page returned."""
    if kind not in TYPES:
        raise InvalidRequest(f"'type' is one of {', '.join(TYPES)}.", param="type")
    if mode not in MODES:
        raise InvalidRequest(f"'mode' is one of {', '.join(MODES)}.", param="mode")
    offset = 0
    if after:
        if not after.isdigit() or int(after) > MAX_OFFSET:
            raise InvalidRequest("'after' is the cursor a previous page returned.", param="after")
        offset = int(after)
    ranked_by = "fts"
    if mode == "semantic" and await library.embedder.ready():
        ranked_by = "semantic"
    hits: list[dict[str, Any]] = []
    models = rank_models(library.ctx.catalog, q) if kind in ("all", "models") else []
    hits += [model_hit(m, s) for m, s in models[offset:offset + limit + 1]]
    if kind in ("all", "library") and len(hits) <= limit:
        skip = max(0, offset - len(models))
        want = limit + 1 - len(hits)
        if ranked_by == "semantic":
            items = await _semantic(library, principal.org_id, q, skip, want)
        else:
            items = await library.repo.search(principal.org_id, q, limit=want, offset=skip)
        hits += [{"type": "library_item", "score": round(s, 4), "item": library.public(i, base_url)}
                 for i, s in items]
    more = len(hits) > limit
    return {"object": "search", "query": q, "mode": ranked_by, "data": hits[:limit], "has_more": more,
            "next_after": str(offset + limit) if more else None}


async def _semantic(library: LibraryService, org_id: str, q: str, skip: int, want: int) -> list[tuple[Any, float]]:
    """Cosine similarity of the query's embedding to each embedded prompt of the org (computed at save time)."""
    query = (await library.embedder.vectors([q]))[0]
    pool = await library.repo.embedded(org_id, SEMANTIC_POOL)
    scored = sorted(((i, cosine(query, i.embedding or [])) for i in pool), key=lambda p: -p[1])
    return scored[skip:skip + want]
