"""OpenTelemetry tracing, off unless asked for: request, auth/gate, upstream attempt and job spans, W3C trace context.

Off (the default without `OTEL_*` exporter settings) nothing here is imported by the request path: the parts hold
`tracing = None` and test that one attribute. On, `build_tracing` makes a tracer provider of this app's own (never
the process-global one, so two apps in one process keep apart) exporting over OTLP as the standard `OTEL_*`
environment says (endpoint, headers, protocol, sampler, service name). The SDK is an extra (`modelyard[otel]`),
imported only here and only when tracing is on.

Outgoing calls read the trace context from `OUTGOING`, a context variable the router sets for each upstream attempt,
so the transport needs neither the SDK nor this module's objects to forward `traceparent`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Iterator

from . import __version__

if TYPE_CHECKING:
    from .catalog import Deployment
    from .config import Settings
    from .pipeline.units import Units
    from .types import Task

log = logging.getLogger(__name__)

# {"traceparent": ..., "tracestate": ...} for the upstream attempt running in this context; None when not traced
OUTGOING: ContextVar[dict[str, str] | None] = ContextVar("modelyard_outgoing_trace", default=None)

# gen_ai.operation.name for each task (OpenTelemetry's GenAI conventions; their own names where they have one)
OPERATIONS = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
# gen_ai.provider.name for each backend kind; local runtimes and workers are served by Modelyard itself
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
_EXPORTER_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")


def wanted(settings: Settings, environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """`tracing: on|off` decide; `auto` (the default) is on when the environment names an OTLP endpoint or a traces
    exporter (other than `none`), and `OTEL_SDK_DISABLED` is not true."""
    if settings.tracing != "auto":
        return settings.tracing == "on"
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name) for name in _EXPORTER_VARS)


def build_tracing(settings: Settings) -> Tracing | None:
    """The app's tracing, or None when it is off."""
    if not wanted(settings):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        message = "tracing needs the OpenTelemetry SDK: pip install 'modelyard[otel]'"
        if settings.tracing == "on":
            raise SystemExit(message) from None
        log.warning("%s; running without tracing", message)
        return None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "modelyard",
                                "service.version": __version__})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # sampler: OTEL_TRACES_SAMPLER
    for kind in dict.fromkeys(k.strip() for k in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")):
        if kind and kind != "none":
            provider.add_span_processor(BatchSpanProcessor(_exporter(kind)))  # batching: OTEL_BSP_*
    return Tracing(provider)


def _exporter(kind: str) -> Any:
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        return ConsoleSpanExporter()
    if kind != "otlp":
        raise SystemExit(f"OTEL_TRACES_EXPORTER={kind}: Modelyard exports traces over 'otlp' or to the 'console'")
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCExporter
        except ImportError:
            raise SystemExit("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc") from None
        return GRPCExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: from OTEL_EXPORTER_OTLP_*


def operation(task: Task) -> str:
    return OPERATIONS.get(task.value, task.value)


class Tracing:
    """One app's tracer: the spans Modelyard makes, and the W3C trace context in and out."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = provider.get_tracer("modelyard", __version__)
        self._context = context
        self._trace = trace
        self._kind = SpanKind
        self._status = Status
        self._error = StatusCode.ERROR
        self._propagator = TraceContextTextMapPropagator()

    # ---------------------------------------------------------------- requests

    def server_span(self, scope: dict[str, Any]) -> tuple[Any, object]:
        """Start the span of one HTTP request, continuing the client's `traceparent` when it sends one, and make it
        current. Returns (span, token for `end_server`)."""
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"traceparent" or name == b"tracestate":
                carrier[name.decode()] = value.decode("latin-1")
        parent = self._propagator.extract(carrier) if carrier else None
        method, path = scope["method"], scope["path"]
        span = self.tracer.start_span(f"{method} {path}", context=parent, kind=self._kind.SERVER,
                                      attributes={"http.request.method": method, "url.path": path})
        return span, self._context.attach(self._trace.set_span_in_context(span))

    def end_server(self, span: Any, token: object, scope: dict[str, Any], status: int, *, fixed_path: bool,
                   exc: BaseException | None = None) -> None:
        """End a request's span. One that served no call is named by its route's template (`GET /api/jobs/{job_id}`),
        or by its path when that is a fixed one (`fixed_path`), else by its method alone: span names stay few."""
        if "gen_ai.operation.name" not in (getattr(span, "attributes", None) or {}):
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
            elif not fixed_path:
                span.update_name(scope["method"])
        if status:
            span.set_attribute("http.response.status_code", status)
        if isinstance(exc, Exception):  # not a cancel (the client left): that is no error of ours
            span.record_exception(exc)
            span.set_status(self._status(self._error, type(exc).__name__))
        elif status >= 500:
            span.set_status(self._status(self._error))
        span.end()
        self._context.detach(token)

    @contextlib.contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Any]:
        """A child of the current span, current itself while the block runs; an exception marks it failed."""
        with self.tracer.start_as_current_span(name, attributes=attributes or None) as span:
            yield span

    def current(self) -> Any:
        """The current span if it records, else None (nothing to annotate)."""
        span = self._trace.get_current_span()
        return span if span.is_recording() else None

    def traceparent(self) -> dict[str, str] | None:
        """The current trace context as W3C headers (kept with a job so its run continues the trace)."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier or None

    # ---------------------------------------------------------------- the call path

    def call_started(self, span: Any, task: Task, model_id: str, req: Any) -> None:
        """The request span becomes `{operation} {model}` (OpenTelemetry's GenAI naming)."""
        op = operation(task)
        requested = req.get("model") if isinstance(req, dict) else getattr(req, "model", None)
        span.update_name(f"{op} {model_id}")
        span.set_attribute("gen_ai.operation.name", op)
        span.set_attribute("gen_ai.request.model", requested if isinstance(requested, str) else model_id)
        span.set_attribute("modelyard.model", model_id)

    def call_served(self, span: Any, deployment: Deployment, result: Any, units: Units | None) -> None:
        """What answered: provider, deployment, response model, token usage and finish reasons."""
        kind = deployment.config.backend
        span.set_attribute("gen_ai.provider.name", PROVIDERS.get(kind, "modelyard"))
        span.set_attribute("modelyard.deployment", deployment.key)
        if isinstance(result, dict):
            model = result.get("model")
            if isinstance(model, str):
                span.set_attribute("gen_ai.response.model", model)
            choices = result.get("choices")
            if isinstance(choices, list):
                reasons = [str(c["finish_reason"]) for c in choices if isinstance(c, dict) and c.get("finish_reason")]
                if reasons:
                    span.set_attribute("gen_ai.response.finish_reasons", reasons)
        if units is not None:
            self.usage(span, units)

    @staticmethod
    def usage(span: Any, units: Units) -> None:
        if units.input_tokens or units.output_tokens:
            span.set_attribute("gen_ai.usage.input_tokens", units.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", units.output_tokens)

    # ---------------------------------------------------------------- upstream attempts

    def start_attempt(self, deployment: Deployment, task: Task, attempt: int, fallback: bool) -> tuple[Any, object]:
        """A span for one try of one deployment (retries and fallbacks each get their own), and its trace context
        set for the outgoing request. Returns (span, token for `end_attempt`)."""
        cfg = deployment.config
        span = self.tracer.start_span(
            f"{operation(task)} {cfg.model or deployment.model_id}", kind=self._kind.CLIENT,
            attributes={"gen_ai.operation.name": operation(task),
                        "gen_ai.provider.name": PROVIDERS.get(cfg.backend, "modelyard"),
                        "gen_ai.request.model": cfg.model or deployment.model_id,
                        "modelyard.model": deployment.model_id, "modelyard.deployment": deployment.key,
                        "modelyard.backend": cfg.backend, "modelyard.attempt": attempt,
                        "modelyard.fallback": fallback})
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        return span, OUTGOING.set(carrier)

    def attempt_sent(self, token: object) -> None:
        """The attempt's request went out: later calls in this context are not part of it."""
        OUTGOING.reset(token)  # type: ignore[arg-type]

    def end_attempt(self, span: Any, exc: BaseException | None = None) -> None:
        if exc is not None:
            status = getattr(exc, "upstream_status", None)
            if status:
                span.set_attribute("http.response.status_code", status)
            code = getattr(exc, "code", None)
            span.set_attribute("error.type", str(code or type(exc).__name__))
            if isinstance(exc, Exception):
                span.set_status(self._status(self._error, str(exc)[:200]))
        span.end()

    # ---------------------------------------------------------------- jobs

    @contextlib.contextmanager
    def job_span(self, job: Any) -> Iterator[Any]:
        """One job run, continuing the trace of the request that submitted it (its `traceparent` in the job's meta)."""
        carrier = job.meta.get("trace") if isinstance(job.meta, dict) else None
        parent = self._propagator.extract(carrier) if isinstance(carrier, dict) else None
        from .types import Task

        try:
            name = f"job {operation(Task(job.task))} {job.model}"
        except ValueError:
            name = f"job {job.task} {job.model}"
        attributes = {"modelyard.job.id": job.id, "modelyard.job.attempt": job.attempts, "modelyard.model": job.model}
        executor = job.meta.get("executor") if isinstance(job.meta, dict) else None
        if executor:
            attributes["modelyard.job.executor"] = executor
        span = self.tracer.start_span(name, context=parent, kind=self._kind.CONSUMER, attributes=attributes)
        token = self._context.attach(self._trace.set_span_in_context(span))
        try:
            yield span
        except BaseException as exc:
            if isinstance(exc, Exception):
                span.record_exception(exc)
                span.set_status(self._status(self._error, type(exc).__name__))
            raise
        finally:
            span.end()
            self._context.detach(token)

    def shutdown(self) -> None:
        """Export what is queued, then stop (the server's shutdown)."""
        try:
            self.provider.shutdown()
        except Exception:
            log.exception("flushing traces on shutdown failed")


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span for a log line, or None; costs nothing while the API is unimported."""
    import sys

    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
