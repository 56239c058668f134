"""The gate every billable call passes: plan check, rate limits, content filter, wallet reserve; then settle + usage.

Its one caller is the call path (`pipeline/calls.py`), which every surface goes through: it decides what the
filter reads, what a call is estimated at and what it consumed, and calls `admit`, then `Ticket.settle` / `fail`,
or stores `Ticket.hold()` with a job for `settle_hold`.

`admit` raises (403 plan / banned, 429 limit with Retry-After, 402 insufficient balance, 400 content filter);
`settle`/`fail` are synchronous and cheap: they queue work for a background flush, so the hot path does no DB I/O.
Without units a paid call is charged its reservation. Jobs outlive the request (and may finish on another
machine): whichever runner finishes the job calls `await gate.settle_hold(hold, units, ok=...)` - charged on
success, refunded on failure or cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InsufficientBalance, PermissionDenied
from ..store.billing_repo import Movement, WalletRepo
from ..store.repo import new_id
from ..store.writebehind import Sink, WriteBehind
from ..types import Task
from .auth import Principal
from .billing import PriceBook, dollars
from .filter import ContentFilter
from .limits import UNLIMITED, Limiter, Taken
from .requestlog import RequestLog
from .units import Units
from .usage import UsageRecorder

log = logging.getLogger(__name__)


@dataclass
class Ticket:
    """One admitted call: the headers to send, and how it ends (exactly one of settle / fail / hold)."""

    principal: Principal
    model_id: str
    task: Task
    headers: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    closed: bool = False
    gate: Gate | None = None
    reserved: int = 0  # micro-dollars taken from the wallet at admission
    ref: str | None = None  # names the reservation in the ledger
    estimate: Units | None = None
    taken: Taken | None = None
    flagged: bool = False
    house: bool = False  # the operator's own (unlimited) org: priced in its usage rows, never charged
    price_factor: float = 1.0  # a discount (batch lines: `batch_price_factor`) on the list price
    scope: Any = None  # the ASGI scope of the request it serves: the request log reads its id, path and trace
    first_at: float | None = None  # a stream's first chunk (monotonic): the request log's time to first token
    log_id: str | None = None  # its usage and request-log rows' id, once it ended
    metered: Any = None  # with metrics on, its model's token and cost series (telemetry.children.UsageChildren)

    def settle(self, units: Units | None = None, deployment: Any = None) -> None:
        """The call succeeded: charge the real price of `units` (the estimate when None), release the rest."""
        if not self.closed:
            self.closed = True
            if self.gate is not None:
                self.gate._finish(self, units, ok=True, deployment=deployment)

    def fail(self, status: int = 502, code: str | None = None) -> None:
        """The call failed (`status`, `code`: what the client was told, for the request log): nothing is charged
        and the whole reservation goes back."""
        if not self.closed:
            self.closed = True
            if self.gate is not None:
                self.gate._finish(self, None, ok=False, deployment=None, status=status, code=code)

    def hold(self) -> dict[str, Any]:
        """The reservation as JSON, to settle later from a job runner (see `Gate.settle_hold`)."""
        self.closed = True
        return {"org_id": self.principal.org_id, "token_id": self.principal.token_id, "model_id": self.model_id,
                "task": self.task.value, "reserved_micros": self.reserved, "ref": self.ref,
                "estimate": asdict(self.estimate) if self.estimate is not None else None,
                "flagged": self.flagged, "house": self.house, "admitted_at": time.time(),
                "price_factor": self.price_factor, **self._origin()}

    def _origin(self) -> dict[str, Any]:
        """The submitting request's id and path, so a job's request-log row names the request that started it."""
        if self.scope is None:
            return {}
        return {"request_id": (self.scope.get("state") or {}).get("request_id"), "route": self.scope.get("path")}


MONEY = "wallet"  # the write-behind kind of wallet movements


def _scaled(micros: int, factor: float) -> int:
    """A list price with a discount applied, rounded up: a discounted call is never free by rounding."""
    return micros if factor == 1.0 else -(-int(micros * factor * 1000) // 1000)
MAX_RESERVE = 2**62  # micro-dollars; beyond this an estimate cannot be stored (64-bit columns) or be real


class Gate:
    """Plan check, rate limits, content filter and wallet reserve on admission; settlement and usage afterwards.

    Free calls (no price) never touch the database on the request path; paid calls make exactly one atomic
    reservation. Everything after the call (releases, usage rows, filter audit rows) goes to the process's
    write-behind (`self.writer`, store/writebehind.py), which writes it in batches and spools it to the data dir
    while the database lags, so none of it is lost to load, shutdown or a locked database. A worker process passes
    everything: its only caller is the control plane, which did all this.
    """

    def __init__(self, settings: Any = None, store: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.passthrough = settings is None or store is None or settings.worker is not None
        self.router: Any = None
        self.catalog: Any = None
        self.metrics: Any = None  # the app's telemetry.Metrics: settled tokens and cost, counted where priced
        self._unpriced_warned: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        if self.passthrough:
            self.writer: WriteBehind | None = None
            return
        every = settings.usage_flush_seconds
        self.writer = WriteBehind(settings.resolved_spool_dir, max_queue=settings.write_behind_max_queue,
                                  grace_seconds=settings.shutdown_grace_seconds,
                                  tick_seconds=min(every, settings.responses_flush_seconds), stuck_seconds=every)
        self.limits = Limiter(settings.plans, settings.redis_url, settings.redis_key_prefix)
        if settings.workers > 1 and not settings.redis_url:
            log.warning("%d gateway processes without redis_url: each counts rate limits on its own", settings.workers)
        self.prices = PriceBook(settings)
        self.wallets = WalletRepo(store)
        # money first: the writer drains sinks in the order they are registered
        self.writer.register(Sink(MONEY, self._write_moves, encode=asdict, interval=every, batch=2_000))
        self.usage = UsageRecorder(store, self.writer, interval=every, batch=settings.write_behind_batch)
        self.requests = RequestLog(store, self.writer, interval=every, batch=settings.write_behind_batch,
                                   enabled=settings.request_log_enabled)
        self.filter = ContentFilter(store, settings.content_filter_model, settings.content_filter_default,
                                    writer=self.writer, interval=every)

    @property
    def _moves(self) -> list[Movement]:
        """Wallet movements queued in memory, not yet written (nor spooled)."""
        return [] if self.writer is None else self.writer.queued(MONEY)

    def plan_allows(self, plan: str, model_id: str) -> bool:
        """Whether `plan` may use the model (what admission checks first), for checks made before any call."""
        if self.passthrough or plan == UNLIMITED:
            return True
        allowed = self.prices.model_plans.get(model_id)
        return allowed is None or plan in allowed

    def filters(self, org_id: str) -> bool:
        """Whether admission will read `text` for this org: routes skip extracting it otherwise."""
        return not self.passthrough and self.filter.action_for(org_id) is not None

    async def admit(self, principal: Principal, model: Any, task: Task, *, estimate: Units | None = None,
                    kind: str | None = None, job: bool = False, text: str | None = None,
                    field: str | None = None, price_factor: float = 1.0, count: bool = True,
                    ref: str | None = None) -> Ticket:
        """`text` is what the content filter inspects (prompt text), when the caller has it at hand; `field` names
        it in a block's 400 (default 'input'); `price_factor` scales what is reserved and charged; `ref` names the
        reservation when the work has a stable name of its own (admitting it again adopts the first one)."""
        model_id = model.id
        if self.passthrough:
            return Ticket(principal=principal, model_id=model_id, task=task)
        plan = principal.plan
        if not self.plan_allows(plan, model_id):
            raise PermissionDenied(f"The model '{model_id}' is not available on the '{plan}' plan.",
                                   param="model", code="model_not_in_plan")
        tokens = estimate.input_tokens + estimate.output_tokens if estimate is not None else 0
        if count:
            headers, taken = await self.limits.admit(plan, principal.org_id, principal.token_id,
                                                     "job" if job else "api", kind, tokens)
        else:  # its submission was counted (an agent run): its kind's rules and token rules still apply
            headers, taken = await self.limits.admit_work(plan, principal.org_id, principal.token_id,
                                                          "job" if job else "api", kind, tokens)
        flagged = False
        if text:
            action = self.filter.action_for(principal.org_id)
            if action is not None:
                flagged = await self.filter.check(self.router, self.catalog, org_id=principal.org_id,
                                                  token_id=principal.token_id, model_id=model_id, action=action,
                                                  text=text, field=field or "input")
        ticket = Ticket(principal=principal, model_id=model_id, task=task, headers=headers, gate=self,
                        estimate=estimate, taken=taken, flagged=flagged, house=plan == UNLIMITED,
                        price_factor=price_factor)
        # the operator's org does not pay itself: its calls skip the wallet (usage rows still show list prices)
        if not ticket.house and not self.prices.is_free(model_id, estimate):
            # a priced call whose estimate is zero (audio of unknown length) still needs money in the wallet
            try:
                amount = max(_scaled(self.prices.cost(model_id, estimate or Units()), price_factor), 1)
            except (OverflowError, ValueError):  # absurd sizes from the client: nobody's balance covers them
                amount = MAX_RESERVE + 1
            if amount > MAX_RESERVE:
                if taken is not None:
                    self.limits.correct(taken, 0)
                raise InsufficientBalance("This call's estimated price is larger than any balance can cover; ask "
                                          "for less (max_tokens, n, duration).")
            ref = ref or new_id("call")
            if not await self.wallets.reserve(principal.org_id, amount, ref):
                if taken is not None:
                    self.limits.correct(taken, 0)
                raise InsufficientBalance(
                    f"Your balance does not cover this call (estimated ${dollars(amount)}). Top up your wallet.")
            ticket.reserved, ticket.ref = amount, ref
        return ticket

    def _price(self, model_id: str, units: Units | None, reserved: int, estimate: Units | None,
               factor: float = 1.0) -> int:
        if self.prices.is_free(model_id, units if units is not None else estimate):
            return 0
        return _scaled(self.prices.cost(model_id, units), factor) if units is not None else reserved

    def _finish(self, t: Ticket, units: Units | None, *, ok: bool, deployment: Any, status: int = 200,
                code: str | None = None) -> None:
        """Queue the settlement, the usage row and the request-log row; never awaits (this is the request path)."""
        if ok and units is None and t.estimate is None and t.reserved and t.model_id not in self._unpriced_warned:
            self._unpriced_warned.add(t.model_id)  # once per model: a route that passes no units undercharges
            log.warning("a paid %s call to %s settled without units: charged only its reservation (%d micro-dollars);"
                        " the route should pass estimate= and settle(units)", t.task.value, t.model_id, t.reserved)
        units = units if units is not None else t.estimate
        price = self._price(t.model_id, units, t.reserved, t.estimate, t.price_factor) if ok else 0
        if not t.house:
            self._queue_money(t.principal.org_id, t.ref, t.reserved, price)
        if t.taken is not None:
            self.limits.correct(t.taken, (units.input_tokens + units.output_tokens) if ok and units else 0)
        region = getattr(getattr(deployment, "config", None), "region", None)
        if ok and units is not None and t.metered is not None:
            m = t.metered  # counted by Metrics.fold, off the request path
            m.settled.append((m, t.task, units.input_tokens, units.output_tokens, price, deployment))
        now = time.monotonic()
        latency = int((now - t.started) * 1000)
        p = t.principal
        fields = self.requests.fields(deployment, t.scope, 200 if ok else status,
                                      int((t.first_at - t.started) * 1000) if t.first_at is not None else None, code)
        t.log_id = self.usage.record(org_id=p.org_id, token_id=p.token_id, model_id=t.model_id, task=t.task.value,
                                     units=units if ok else None, price_micros=price,
                                     status="ok" if ok else "failed", latency_ms=latency, region=region,
                                     flagged=t.flagged, log=fields)

    def _count(self, model_id: str, task: Task, units: Units, price: int, deployment: Any) -> None:
        """A job's settled tokens and cost (a call's ticket carries its model's series: `Ticket.metered`)."""
        self.metrics.usage(model_id).record(task, units.input_tokens, units.output_tokens, price, deployment)

    # A release queued here and lost to a SIGKILL within one flush interval leaves its `reserve` ledger row with no
    # settlement. No reconciler refunds those automatically (decided for issue 11): a job's hold (`Ticket.hold`)
    # uses the same ref namespace and may stay unsettled for hours while the job waits or runs, so an age bound
    # alone would refund money a job runner is about to charge. The window is one `usage_flush_seconds`; the
    # README tells operators to find such rows (reserve, no release/charge) and refund them by hand.
    def _queue_money(self, org_id: str, ref: str | None, reserved: int, price: int) -> None:
        delta = reserved - price
        if delta > 0:
            self.writer.put(MONEY, Movement(org_id, "release", delta, ref))  # type: ignore[union-attr]
        elif delta < 0:  # the call cost more than its estimate: collect the rest if the wallet covers it
            self.writer.put(MONEY, Movement(org_id, "charge", delta, ref, "over the reservation"))  # type: ignore[union-attr]

    async def _write_moves(self, records: list[dict[str, Any]]) -> None:
        """The wallet sink: idempotent per (kind, ref), so a replayed movement moves its money once."""
        for skipped in await self.wallets.apply(Movement(**r) for r in records):
            log.error("org %s: %s micro-dollars over call %s's reservation could not be collected "
                      "(balance too low)", skipped.org_id, -skipped.amount_micros, skipped.ref)

    async def settle_hold(self, hold: dict[str, Any], units: Units | None, *, ok: bool,
                          deployment: Any = None, record: bool = True) -> None:
        """Finish a job's reservation: charge the real price when `ok`, refund all of it otherwise. `record=False`:
        a reservation whose job was never written (no call was made) goes back without a usage row."""
        if self.passthrough:
            return
        estimate = Units(**hold["estimate"]) if hold.get("estimate") else None
        reserved = int(hold.get("reserved_micros") or 0)
        units = units if units is not None else estimate
        factor = float(hold.get("price_factor", 1.0))
        price = self._price(hold["model_id"], units, reserved, estimate, factor) if ok else 0
        if not hold.get("house"):
            self._queue_money(hold["org_id"], hold.get("ref"), reserved, price)
        if ok and units is not None and self.metrics is not None:
            self._count(hold["model_id"], Task(hold["task"]), units, price, deployment)
        admitted = float(hold.get("admitted_at") or time.time())
        latency = _millis(time.time() - admitted)
        if record:
            fields = self.requests.fields(deployment, None, 200 if ok else 500, None, None if ok else "job_failed",
                                          request_id=hold.get("request_id"), route=hold.get("route"))
            self.usage.record(org_id=hold["org_id"], token_id=hold.get("token_id"), model_id=hold["model_id"],
                              task=hold["task"], units=units if ok else None, price_micros=price,
                              status="ok" if ok else "failed", latency_ms=latency,
                              region=getattr(getattr(deployment, "config", None), "region", None),
                              flagged=bool(hold.get("flagged")),
                              tags=(hold.get("job_id"), hold.get("run_id"), hold.get("run_node")),
                              use_id=hold_usage_id(hold), log=fields)
        await self.flush()  # a job runner is off the request path: make the refund visible now

    async def flush(self) -> None:
        """Write everything queued now: settlements, usage rows, filter events, token counters, stored responses
        (and what the spool holds). A database failure is logged and leaves them queued; nothing is dropped."""
        if self.writer is not None:
            await self.writer.flush()

    def describe(self) -> dict[str, Any]:
        return {} if self.passthrough else self.limits.describe()

    async def start(self, router: Any = None, catalog: Any = None) -> None:
        """Begin background writing (called from the app's lifespan); the writer first replays any spool."""
        self.router, self.catalog = router, catalog
        if self.passthrough:
            return
        self.requests.router, self.requests.catalog = router, catalog  # the PII model redacts kept bodies
        if catalog is not None:
            self.prices.resolve(catalog)
        await self.filter.refresh()
        await self.writer.start()  # type: ignore[union-attr]
        self._task = asyncio.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.usage_flush_seconds)
            try:
                await self.filter.refresh_if_stale()
            except Exception:  # the loop must outlive any one bad refresh
                log.exception("content filter refresh failed")

    async def aclose(self) -> None:
        """Drain what is queued, with retries until `shutdown_grace_seconds`; the rest is spooled (shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.passthrough:
            await self.writer.aclose()  # type: ignore[union-attr]
            await self.limits.aclose()


def hold_usage_id(hold: dict[str, Any]) -> str:
    """The usage row id of a hold's settlement, from the hold itself (its job, reservation and admission time): a
    settlement repeated by the sweep (its runner died after settling, before recording it) lands on the same row,
    which the insert skips, instead of writing a second charged one. A job admitted again (an agent advance that
    never committed) has a new hold, so a new row."""
    key = f"{hold.get('job_id')}\0{hold.get('ref')}\0{hold.get('admitted_at')}"
    return "use_h" + hashlib.sha256(key.encode()).hexdigest()[:24]


MAX_LATENCY_MS = 2**31 - 1  # the usage table's INTEGER column (PostgreSQL int4)


def _millis(seconds: float) -> int:
    """A job's latency in whole milliseconds, clamped to what the column holds: a hold settled weeks after its
    admission (a job parked or retried that long) would otherwise overflow int4 and its usage row fail to write."""
    return min(max(int(seconds * 1000), 0), MAX_LATENCY_MS)
