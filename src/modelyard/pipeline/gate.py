"""The gate every billable call passes: plan check, rate limits, content filter, wallet reserve; then settle + usage.

Routes of every dialect use it the same way, so limits, prices and usage apply alike to all of them:

    principal = await ctx.auth.authenticate(request, sc.USER_WRITE)
    ticket = await ctx.gate.admit(principal, model, Task.CHAT, estimate=Units(input_tokens=n), kind="chat")
    try:
        result, deployment = await ...router...
    except BaseException:
        ticket.fail()                      # nothing charged; the reservation is released
        raise
    ticket.settle(Units(...), deployment)  # real charge, rest refunded, usage row queued (never awaited)
    return Response(..., headers={**served_by(deployment), **ticket.headers})

`admit` raises (403 plan / banned, 429 limit with Retry-After, 402 insufficient balance, 400 content filter);
`settle`/`fail` are synchronous and cheap: they queue work for a background flush, so the hot path does no DB I/O.

Jobs outlive the request (and may finish on another machine): a job submission passes `job=True` (the `job`
rate-limit class), stores `ticket.hold()` (JSON) in the job row instead of settling, and whichever runner finishes
the job calls `await gate.settle_hold(hold, units, ok=...)` - charged on success, refunded on failure or cancel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..types import Task
from .auth import Principal


@dataclass(slots=True)
class Units:
    """What a call consumed (or is estimated to consume); the price table turns these into micro-dollars."""

    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    image_size: str | None = None
    image_quality: str | None = None
    video_seconds: float = 0.0
    video_resolution: str | None = None
    characters: int = 0
    audio_seconds: float = 0.0
    requests: int = 1
    mode: str | None = None  # a studio mode (t2i, i2v_pro, ...): priced from the studio table, not the model's


@dataclass(slots=True)
class Ticket:
    """One admitted call: the headers to send, and how it ends (exactly one of settle / fail)."""

    principal: Principal
    model_id: str
    task: Task
    headers: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    closed: bool = False

    def settle(self, units: Units | None = None, deployment: Any = None) -> None:
        self.closed = True

    def fail(self, status: int = 502) -> None:
        self.closed = True

    def hold(self) -> dict[str, Any]:
        """The reservation as JSON, to settle later from a job runner (see `Gate.settle_hold`)."""
        self.closed = True
        return {"org_id": self.principal.org_id, "token_id": self.principal.token_id, "model_id": self.model_id,
                "task": self.task.value, "reserved_micros": 0}


class Gate:
    """Pass-through gate: admits every call. Plans, limits, prices and wallets replace this (issue #5)."""

    def __init__(self, settings: Any = None, store: Any = None) -> None:
        self.settings = settings
        self.store = store

    async def admit(self, principal: Principal, model: Any, task: Task, *, estimate: Units | None = None,
                    kind: str | None = None, job: bool = False, text: str | None = None) -> Ticket:
        """`text` is what the content filter inspects (prompt text), when the caller has it at hand."""
        return Ticket(principal=principal, model_id=model.id, task=task)

    async def settle_hold(self, hold: dict[str, Any], units: Units | None, *, ok: bool,
                          deployment: Any = None) -> None:
        """Finish a job's reservation: charge the real price when `ok`, refund all of it otherwise."""

    async def start(self) -> None:
        """Begin background flushing (called from the app's lifespan)."""

    async def aclose(self) -> None:
        """Flush queued usage and settlements (called on shutdown)."""
