"""Content filter: per-org policies (block / flag / log / off) checked on generation input by the moderation model."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..errors import InvalidRequest, ModelyardError, Overloaded
from ..store.billing_repo import FilterPolicy, FilterRepo
from ..store.db import Store
from ..store.repo import new_id
from ..store.writebehind import Sink, WriteBehind
from ..types import Task
from ..protocols.openai.media import ModerationRequest

log = logging.getLogger(__name__)
ACTIONS = ("block", "flag", "log", "off")
REFRESH_SECONDS = 10.0  # how soon a policy changed through another replica applies here
EVENTS = "filter_event"  # the write-behind kind of audit events
# Generation input is filtered; analysis tasks (PII, moderation, rerank, score, transcription) are not: finding
# personal data in a text is what a PII request is for, and refusing it would make that route useless.
FILTERED_TASKS = frozenset({Task.CHAT, Task.COMPLETION, Task.EMBEDDING, Task.SPEECH, Task.TEXT_TO_IMAGE,
                            Task.IMAGE_TO_IMAGE, Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO})
# The caller's words reach the model through these roles (a tool result is text the caller hands the model);
# the model's own earlier answers (assistant) are not the caller's input.
FILTERED_ROLES = frozenset({"system", "developer", "user", "tool"})
PROMPT_FIELDS = ("prompt", "positive_prompt", "input", "messages")


def filtered_text(task: Task, req: Any) -> tuple[str | None, str]:
    """The text the content filter reads from a request, and the field a refusal names. One definition for every
    face: a validated request (chat messages, completions prompts, image/video/speech prompts; Anthropic, Gemini
    and Responses input arrive converted to chat) or a job's payload dict (studio `positive_prompt`, fal `prompt`)."""
    if task not in FILTERED_TASKS:
        return None, "input"
    for name in PROMPT_FIELDS:
        value = req.get(name) if isinstance(req, dict) else getattr(req, name, None)
        if value is None:
            continue
        if isinstance(value, str):
            return value, name
        if isinstance(value, list):
            text = "\n".join(t for t in (_item_text(v) for v in value) if t)
            return (text or None), name
    return None, "input"


def _item_text(item: Any) -> str:
    """One prompt of a list, or one message / input item (an object or a dict) of a filtered role."""
    if isinstance(item, str):
        return item
    get = item.get if isinstance(item, dict) else lambda k: getattr(item, k, None)
    role = get("role")
    if role is not None and role not in FILTERED_ROLES:
        return ""
    content = get("content")
    if content is None:
        content = get("output")  # a Responses function_call_output item: the caller's tool result
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") if isinstance(p, dict) else getattr(p, "text", None) for p in content]
        return "\n".join(p for p in parts if isinstance(p, str) and p)
    return ""


class ContentFilter:
    """Policies live in memory (loaded at start, refreshed in the background), so orgs without one pay nothing."""

    def __init__(self, store: Store, model_name: str, default: str | None, *, writer: WriteBehind,
                 interval: float = 1.0) -> None:
        self.repo = FilterRepo(store)
        self.model_name = model_name
        self.default = default
        self.policies: dict[str, FilterPolicy] = {}
        self._loaded_at = 0.0
        # audit events go through the process's write-behind (ids assigned now, so a replay writes each once)
        self.writer = writer
        writer.register(Sink(EVENTS, self.repo.record, interval=interval))

    def action_for(self, org_id: str) -> str | None:
        """The action that applies, or None when nothing need be checked (the hot path's only cost)."""
        policy = self.policies.get(org_id)
        action = policy.action if policy is not None else self.default
        return None if action in (None, "off") else action

    def remember(self, org_id: str, policy: FilterPolicy | None) -> None:
        if policy is None:
            self.policies.pop(org_id, None)
        else:
            self.policies[org_id] = policy

    async def refresh(self) -> None:
        try:
            self.policies = {p.org_id: p for p in await self.repo.all()}
            self._loaded_at = time.monotonic()
        except Exception:  # keep the last known policies; the next refresh tries again
            log.exception("could not load content filter policies")

    async def refresh_if_stale(self) -> None:
        if time.monotonic() - self._loaded_at >= REFRESH_SECONDS:
            await self.refresh()

    async def check(self, router: Any, catalog: Any, *, org_id: str, token_id: str, model_id: str, action: str,
                    text: str, field: str) -> bool:
        """Classify `text`; `block` raises a 400 naming `field`. Returns whether the usage row is to be flagged."""
        policy = self.policies.get(org_id)
        try:
            flagged = await self._classify(router, catalog, text, policy.categories if policy else None)
        except ModelyardError as exc:
            if action == "block":  # a blocking policy fails closed: nothing unchecked gets through
                raise Overloaded("The content filter is unavailable right now; retry shortly.",
                                 code="content_filter_unavailable", retry_after=5) from exc
            log.warning("content filter unavailable, allowing a call under a '%s' policy: %s", action, exc.message)
            return False
        if not flagged:
            return False
        if action == "block":
            raise InvalidRequest(f"'{field}' was rejected by your organization's content filter "
                                 f"({', '.join(flagged)}).", param=field, code="content_filter")
        if action == "log":
            self.writer.put(EVENTS, {"id": new_id("cfe"), "org_id": org_id, "token_id": token_id,
                                     "model_id": model_id, "action": action, "categories": flagged,
                                     "created_at": time.time()})
            return False
        return True  # flag

    async def _classify(self, router: Any, catalog: Any, text: str, only: tuple[str, ...] | None) -> list[str]:
        model = catalog.find(self.model_name) or catalog.first_for(Task.MODERATION)
        if model is None:
            raise Overloaded("No moderation model is configured for the content filter.")
        result, _ = await router.run(model, Task.MODERATION, ModerationRequest(input=text), None)
        flagged: set[str] = set()
        for item in result.get("results", []):
            for category, hit in (item.get("categories") or {}).items():
                if hit and (only is None or category in only):
                    flagged.add(category)
        return sorted(flagged)

async def refresh_forever(flt: ContentFilter) -> None:
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        await flt.refresh()
