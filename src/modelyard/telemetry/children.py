"""Each label set's children, resolved once and kept: the hot path increments and observes, never builds labels."""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from ..errors import InsufficientBalance, ModelyardError, RateLimited
from ..types import Task
from .genai import operation
from .values import View

if TYPE_CHECKING:
    from .metrics import Metrics

UNKNOWN = "unknown"  # the label of a model the catalog does not know, and of a provider not known yet


def classify(exc: BaseException) -> tuple[str, str]:
    """(status class, error type) of a failure: our errors by their HTTP status and class name (a closed set, ours),
    a client that left as `cancelled`, anything else as a 5xx internal error (never a free-form name)."""
    if isinstance(exc, ModelyardError):
        return f"{exc.status // 100}xx", type(exc).__name__
    if not isinstance(exc, Exception) or type(exc).__name__ == "ClientGone":
        return "cancelled", "cancelled"
    return "5xx", "InternalError"


class _GenAI:
    """The GenAI semantic-convention series of one (operation, model, provider)."""

    __slots__ = ("duration", "ttft", "tpot", "_m", "_labels", "_errors")

    def __init__(self, m: Metrics, labels: tuple[str, str, str]) -> None:
        self._m, self._labels = m, labels
        self.duration = m.gen_duration.labels(*labels, "")  # type: ignore[union-attr]
        self.ttft = m.gen_ttft.labels(*labels)  # type: ignore[union-attr]
        self.tpot = m.gen_tpot.labels(*labels)  # type: ignore[union-attr]
        self._errors: dict[str, Any] = {}

    def failed(self, error_type: str, seconds: float) -> None:
        child = self._errors.get(error_type)
        if child is None:
            child = self._errors[error_type] = self._m.gen_duration.labels(*self._labels, error_type)  # type: ignore[union-attr]
        child.observe(seconds)


class CallChildren:
    """What one (face, model, task)'s calls touch from admission to their end.

    A call that succeeds is counted later, not on its request path: it appends one tuple to `ended` (the app's
    `Metrics.ended`: these children, its duration, overhead, provider and, for a stream, its time per output
    token and to its first token), and `Metrics.fold` adds the tuples up on the write-behind's tick and before
    every scrape (docs/performance.md, "The request log rides on the usage row; metrics counted in a batch").
    Failures and refusals are counted at once: they are rare, and an error's labels are worked out then."""

    __slots__ = ("_m", "_labels", "model", "task", "in_flight", "ok", "duration", "overhead", "ttft", "tpot",
                 "usage", "ended", "_failures", "_refusals", "_genai")

    def __init__(self, m: Metrics, face: str, model: str, task: Task) -> None:
        self._m = m
        self.ended = m.ended
        self._labels = (face, model, task.value)
        self.model, self.task = model, task
        self.in_flight = m.in_flight.labels(*self._labels)
        self.ok = m.requests.labels(*self._labels, "2xx")
        self.overhead = m.overhead.labels(*self._labels)
        self.duration = m.duration.labels(*self._labels) if m.duration is not None else None
        self.ttft = m.ttft.labels(face, model) if m.ttft is not None else None
        self.tpot = m.tpot.labels(face, model) if m.tpot is not None else None
        self.usage = m.usage(model)  # the model's tokens and cost, counted when a call settles (`Ticket.metered`)
        self._failures: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._refusals: dict[str, Any] = {}
        self._genai: dict[str, _GenAI] = {}

    def genai(self, provider: str) -> _GenAI:
        found = self._genai.get(provider)
        if found is None:
            found = self._genai[provider] = _GenAI(self._m, (operation(self.task), self.model, provider))
        return found

    def genai_succeeded(self, total: float, provider: str | None, ttft: float | None, tpot: float | None) -> None:
        """A successful call's GenAI-convention series (`metrics_names` otel or both; `Metrics.fold` adds up ours
        inline)."""
        g = self.genai(provider or UNKNOWN)
        if self._m.gen_duration is not None:
            g.duration.observe(total)
        if ttft is not None and self._m.gen_ttft is not None:
            g.ttft.observe(ttft)
        if tpot is not None and self._m.gen_tpot is not None:
            g.tpot.observe(tpot)

    def held(self) -> None:
        """A job's admission: accepted (its work runs later, on a runner), not timed as a call."""
        self.ok.inc()
        self.in_flight.dec()

    def failed(self, total: float, exc: BaseException, provider: str | None = None, *, admitted: bool = True
               ) -> None:
        status, error_type = classify(exc)
        pair = self._failures.get((status, error_type))
        if pair is None:
            pair = self._failures[(status, error_type)] = (self._m.requests.labels(*self._labels, status),
                                                            self._m.errors.labels(*self._labels, error_type))
        pair[0].inc()
        pair[1].inc()
        if admitted:
            self.in_flight.dec()
            if self.duration is not None:
                self.duration.observe(total)
            if self._m.gen_duration is not None:
                self.genai(provider or UNKNOWN).failed(error_type, total)

    def refused(self, reason: str) -> None:
        child = self._refusals.get(reason)
        if child is None:
            child = self._refusals[reason] = self._m.refusals.labels(self._labels[0], self.model, reason)
        child.inc()

    def first_token(self, seconds: float, provider: str) -> None:
        b = self.ttft
        if b is not None:
            b.sum += seconds
            b.counts[bisect_left(b.bounds, seconds)] += 1
        if self._m.gen_ttft is not None:
            self.genai(provider).ttft.observe(seconds)



class UsageChildren:
    """What one model's settled calls add: tokens by type and cost. A call's settlement appends a tuple to
    `settled` (these children, then `record`'s arguments), added up by `Metrics.fold`."""

    __slots__ = ("_m", "model", "input", "output", "cost", "settled", "_genai")

    def __init__(self, m: Metrics, model: str) -> None:
        self._m, self.model = m, model
        self.settled = m.settled
        self.input = m.tokens.labels(model, "input") if m.tokens is not None else None
        self.output = m.tokens.labels(model, "output") if m.tokens is not None else None
        self.cost = m.cost.labels(model)
        self._genai: dict[tuple[Task, str], tuple[Any, Any]] = {}

    def record(self, task: Task, input_tokens: int, output_tokens: int, price_micros: int, deployment: Any) -> None:
        """One settled call's or job's tokens and list price; `deployment` (what served it, or None) gives the
        GenAI series' provider."""
        if self.input is not None:
            if input_tokens:
                self.input.value += input_tokens
            if output_tokens:
                self.output.value += output_tokens  # type: ignore[union-attr]
        if price_micros:
            self.cost.value += price_micros / 1_000_000
        usage = self._m.gen_tokens
        if usage is not None and (input_tokens or output_tokens):
            provider = getattr(getattr(deployment, "config", None), "backend", None) or UNKNOWN
            pair = self._genai.get((task, provider))
            if pair is None:
                labels = (operation(task), self.model, provider)
                pair = self._genai[(task, provider)] = (usage.labels(*labels, "input"), usage.labels(*labels, "output"))
            if input_tokens:
                pair[0].observe(input_tokens)
            if output_tokens:
                pair[1].observe(output_tokens)


class DeploymentChildren:
    """One deployment's series: in flight, outcomes, latency, upstream duration, retries and cooldowns.

    The router counts each deployment's calls in flight, successes and failures for its own choices
    (`routing.DeploymentStats`); those three series read its numbers at the scrape rather than being counted again
    per call. The latency summary is the count and sum of the upstream histogram's successes (the same duration),
    so a success is observed once."""

    __slots__ = ("in_flight", "success", "failure", "latency", "upstream_ok", "upstream_failed", "retries",
                 "cooldowns", "observed")

    def __init__(self, m: Metrics, model: str, name: str, backend: str, region: str, stats: Any) -> None:
        labels = (model, name, backend, region)
        self.observed = m.observed  # (histogram, value) of each successful attempt, added up by `Metrics.fold`
        self.in_flight = m.deployment_in_flight.share(labels, View(stats, "in_flight"))
        self.success = m.deployment_requests.share((*labels, "success"), View(stats, "successes"))
        self.failure = m.deployment_requests.share((*labels, "failure"), View(stats, "failures"))
        self.upstream_ok = m.upstream.labels(model, name, backend, "success")
        self.latency = m.deployment_latency.share(labels, self.upstream_ok)
        self.upstream_failed = m.upstream.labels(model, name, backend, "failure")
        self.retries = m.retries.labels(model, name)
        self.cooldowns = m.cooldowns.labels(model, name)


REFUSED_CODES = frozenset({"model_not_in_plan", "content_filter", "content_filter_unavailable"})


def refusal_reason(exc: BaseException) -> str | None:
    """Why admission refused a call, as a label (None: a failure, not a refusal). A rate limit says whether a
    request count or a token budget was full."""
    if isinstance(exc, RateLimited):
        tokens = any(name.startswith("X-RateLimit-Limit-Tokens") for name in exc.headers)
        return "rate_limit_tokens" if tokens else "rate_limit_requests"
    if isinstance(exc, InsufficientBalance):
        return "insufficient_balance"
    code = getattr(exc, "code", None)
    return code if code in REFUSED_CODES else None
