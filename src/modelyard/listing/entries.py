"""A model's state as /api/model-status shows it, and its entry in /api/catalog: what a client needs to call it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..catalog import Model
from ..catalog.describe import parameters, takes_extra
from ..errors import NotFound
from ..jobs.tasks import PYDANTIC_TYPES, task_named
from ..pipeline.billing import price_list
from ..protocols.openai.completions import CompletionRequest
from ..routing import best_state
from ..types import ModelState, Task

if TYPE_CHECKING:
    from ..context import AppContext

# The schema each task's JSON requests are validated with: the job payload types, which the sync routes use too,
# and the completions route's. The catalog's parameters are read from these, so they say what the routes accept.
REQUEST_TYPES: dict[Task, type[BaseModel]] = {**PYDANTIC_TYPES, Task.COMPLETION: CompletionRequest}
# Tasks whose request is a multipart upload checked field by field in its route (no schema to read): their
# parameters are listed as null, and /openapi.json documents their form.
FORM_TASKS = frozenset({Task.IMAGE_TO_IMAGE, Task.TRANSCRIPTION, Task.TRANSLATION})


async def status_entry(ctx: AppContext, model: Model) -> dict[str, Any]:
    """One model's state, tasks, names and deployments, as /api/model-status lists them."""
    deployments, states = [], []
    for d in ctx.router.deployments(model):
        backend = ctx.router.backends[d.key]
        stats = ctx.router.stats[d.key]
        states.append(await backend.status())
        deployments.append({"name": d.name, "backend": d.config.backend, "region": d.config.region,
                            "status": states[-1].value, "in_flight": stats.in_flight,
                            "successes": stats.successes, "failures": stats.failures, **backend.describe()})
    state = best_state(states)
    return {"model_id": model.id, "type": model.type, "status": state.value, "enabled": state != ModelState.OFFLINE,
            "tasks": sorted(t.value for t in model.tasks), "aliases": list(model.aliases),
            # where fal-client reaches the model (fal queue face): modelyard/<id> plus configured slugs
            "fal_slugs": [f"modelyard/{model.id}", *sorted(s for s, m in ctx.settings.fal_slugs.items() if m == model.id)],
            "description": model.description, "deployments": deployments}


@functools.cache
def task_parameters(task: Task) -> list[dict[str, Any]] | None:
    """The parameters a request for `task` takes (None for a multipart task); read once per process, as the
    schemas are classes that do not change while it runs."""
    schema = REQUEST_TYPES.get(task)
    return parameters(schema) if schema is not None else None


@dataclass(frozen=True)
class CatalogQuery:
    """`?type=&task=&q=`: the model's type, a task it serves (aliases such as fal/text-to-image accepted), and a
    case-insensitive substring of its id, an alias or its description."""

    type: str | None = None
    task: Task | None = None
    q: str | None = None

    @classmethod
    def parse(cls, params: Any) -> CatalogQuery:
        task = params.get("task") or None
        q = (params.get("q") or "").strip().lower()
        return cls(type=params.get("type") or None, task=task_named(task) if task else None, q=q or None)

    def matches(self, model: Model) -> bool:
        if self.type is not None and model.type != self.type:
            return False
        if self.task is not None and self.task not in model.tasks:
            return False
        if self.q is not None:
            return any(self.q in text.lower() for text in (model.id, *model.aliases, model.description or ""))
        return True


def _limits(ctx: AppContext, model: Model) -> dict[str, Any]:
    """What bounds a request beyond its parameters' ranges. A context length is known only where we run the
    weights (llama.cpp's n_ctx); an upstream's is not ours to state."""
    local = [d.config.n_ctx for d in ctx.router.deployments(model) if d.config.backend == "llama_cpp"]
    text = model.tasks & {Task.CHAT, Task.COMPLETION}
    return {"context_length": max(local) if local and text else None,
            "max_body_bytes": ctx.settings.max_body_bytes,
            "max_upload_bytes": ctx.settings.max_upload_bytes if model.tasks & FORM_TASKS else None}


async def catalog_entry(ctx: AppContext, model: Model, prices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One model's catalog entry; `prices` is /api/pricing's model list keyed by model id."""
    status = await status_entry(ctx, model)
    priced = prices.get(model.id, {})
    tasks = sorted(model.tasks, key=lambda t: t.value)
    return {
        "id": model.id, "object": "model", "type": model.type, "aliases": status["aliases"],
        "fal_slugs": status["fal_slugs"], "tasks": status["tasks"], "description": model.description,
        "owned_by": model.owned_by, "status": status["status"], "enabled": status["enabled"],
        # a deployment without a region serves the requests that name none
        "regions": sorted({d["region"] for d in status["deployments"] if d["region"]}),
        # where it runs now, each with its own state: configured deployments, then those of live workers
        "deployments": status["deployments"],
        "price": priced.get("price"), "free": priced.get("free", True), "plans": priced.get("plans"),
        "limits": _limits(ctx, model),
        "parameters": {t.value: task_parameters(t) for t in tasks},
        "extra_parameters": {t.value: t in REQUEST_TYPES and takes_extra(REQUEST_TYPES[t]) for t in tasks},
        "latency": {t.value: ctx.router.latency.profile(model.id, t) for t in tasks},
    }


def _prices(ctx: AppContext) -> dict[str, dict[str, Any]]:
    listed = price_list(None if ctx.gate.passthrough else ctx.gate.prices, ctx.catalog)
    return {m["model_id"]: m for m in listed["models"]}


async def catalog_entries(ctx: AppContext, plan: str, query: CatalogQuery) -> list[dict[str, Any]]:
    """The models `plan` may call that match `query`."""
    prices = _prices(ctx)
    return [await catalog_entry(ctx, m, prices) for m in ctx.catalog
            if ctx.gate.plan_allows(plan, m.id) and query.matches(m)]


async def one_entry(ctx: AppContext, plan: str, name: str) -> dict[str, Any]:
    """The entry of the model `name` names (an id or an alias); a model the plan may not call is not found."""
    model = ctx.catalog.find(name)
    if model is None or not ctx.gate.plan_allows(plan, model.id):
        raise NotFound(f"No model '{name}' in your catalog.", code="model_not_found")
    return await catalog_entry(ctx, model, _prices(ctx))
