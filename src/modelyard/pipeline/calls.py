"""The call path: every unit of paid work runs from admission to settlement through this one piece of code.

Every surface — the OpenAI, Anthropic, Gemini, fal and studio routes, streams, `"async": true`, job runners, and
whatever starts paid work next (batch lines, agent nodes, render) — goes through `CallPath`:

    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)
    async with ctx.calls.start(principal, model, Task.CHAT, req, client=request) as call:
        if not req.stream:
            resp, deployment = await call.run(ctx.router.chat(model, req, region))    # settled on its usage
            return json_response(resp)
        first, stream, deployment = await call.open(ctx.router.open_stream(model, req, region))
        return EventStream(call.relay(first, stream, deployment, framing))          # settled when it ends

It owns admission (plan, rate limits, content filter, wallet reserve), the failure path (an exception, a cancel or
a client that leaves releases the reservation, uncharged), settlement on the units the result shows, the usage row,
and the headers the call earns (rate limits, which deployment served): those go out with whatever the route
answers, errors included. A stream the client leaves after bytes were sent is charged for what it was sent.

Jobs outlive their request: `start(..., job=True)` admits in the `job` limit class, the service stores
`call.hold()` in the job row, and whichever runner finishes the job calls `settle_hold`.

What a request is filtered on (`filter.filtered_text`), what it is estimated to cost (`estimate_units`), what its
result consumed (`result_units`) and which rate-limit kind it counts in (`KIND_OF_TASK`) are each defined once, here
or in the module named.
"""

from __future__ import annotations

import asyncio
import logging
import time
from time import perf_counter
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Protocol, TypeVar

from ..catalog import Deployment, Model
from ..errors import InternalError, ModelyardError, ShuttingDown
from ..telemetry.children import UNKNOWN, refusal_reason
from ..telemetry.genai import face_of
from ..tracing import Tracing
from ..types import Task
from .auth import Authenticator, Principal
from .billing import chat_estimate, chat_units, chunk_events, task_units
from .filter import filtered_text
from .gate import Gate, Ticket
from .units import Units

if TYPE_CHECKING:  # the families live in the telemetry package; the call path only touches their children
    from ..telemetry import Metrics
    from ..telemetry.children import CallChildren

log = logging.getLogger(__name__)
T = TypeVar("T")

# The rate-limit kind each task counts in (plans limit e.g. chat or images per minute per key). Every text
# generation counts as chat, whichever face asked: a plan's chat limit cannot be stepped around through
# /v1/completions, /v1/responses, Anthropic's or Gemini's routes. Analysis tasks count only in kind-less rules.
KIND_OF_TASK: dict[Task, str] = {
    Task.CHAT: "chat", Task.COMPLETION: "chat", Task.EMBEDDING: "embeddings",
    Task.TEXT_TO_IMAGE: "images", Task.IMAGE_TO_IMAGE: "images",
    Task.TEXT_TO_VIDEO: "videos", Task.IMAGE_TO_VIDEO: "videos",
    Task.SPEECH: "audio", Task.TRANSCRIPTION: "audio", Task.TRANSLATION: "audio",
}
# Where a call's earned headers wait in the ASGI scope until the server writes the response's head.
RESPONSE_HEADERS = "modelyard.response_headers"


class Client(Protocol):
    """The HTTP request a call serves (a Starlette Request fits): its disconnect cancels the work, and the headers
    the call earns go out with its answer."""

    scope: MutableMapping[str, Any]

    async def receive(self) -> Mapping[str, Any]: ...


Watch = Callable[[Callable[[], Awaitable[Mapping[str, Any]]], Awaitable[T]], Awaitable[T]]
# Registers an open stream's cut function with the server's shutdown; returns the function that unregisters it.
Streams = Callable[[Callable[[], None]], Callable[[], None]]


class Framing(Protocol):
    """How a face writes a stream: its opening, each chunk, its close, an error after bytes went out, and the
    usage the stream reported (None until it does)."""

    def head(self) -> bytes: ...

    def chunk(self, chunk: Any) -> bytes: ...

    def tail(self) -> bytes: ...

    def error(self, exc: ModelyardError) -> bytes: ...

    def usage(self) -> Units | None: ...


def estimate_units(task: Task, req: Any) -> Units:
    """What a request is reserved at before it runs: an upper bound, settled later on what it really consumed."""
    if task in (Task.CHAT, Task.COMPLETION):
        return chat_estimate(req)
    return task_units(task, req)


def result_units(task: Task, req: Any, result: Any, estimate: Units | None) -> Units | None:
    """What a finished call consumed, read from its result (chat-shaped results carry OpenAI's `usage`)."""
    if task in (Task.CHAT, Task.COMPLETION):
        return chat_units(result.get("usage") if isinstance(result, dict) else None, estimate)
    return task_units(task, req, result)


def failure(exc: BaseException) -> tuple[int, str | None]:
    """What a failed call's client was told: HTTP status and error code (a client that left: 499)."""
    if isinstance(exc, ModelyardError):
        return exc.status, exc.code
    if isinstance(exc, asyncio.CancelledError) or type(exc).__name__ == "ClientGone":
        return 499, "client_closed"
    return 500, "internal_error"


def served_by(deployment: Deployment) -> dict[bytes, bytes]:
    """The headers that say which model and deployment answered, as they go out (lowercase, encoded)."""
    return {b"x-modelyard-model": deployment.model_id.encode("latin-1"),
            b"x-modelyard-deployment": deployment.name.encode("latin-1")}


def publish_headers(client: Client | None, headers: Mapping[str, str]) -> None:
    """Headers for the response the client will get, whatever the route renders (its errors included). They wait
    in the ASGI scope encoded, keyed by lowercase name, so the server only appends them; routes never set these
    names themselves (the call path owns them)."""
    if client is not None and headers:
        _held(client).update((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())


def _held(client: Client) -> dict[bytes, bytes]:
    held = client.scope.get(RESPONSE_HEADERS)
    if held is None:
        held = client.scope[RESPONSE_HEADERS] = {}
    return held


class Call:
    """One admitted unit of paid work. It ends exactly once: settled on what it consumed, or released.

    With metrics on, it is timed from admission (`t0`): the time spent awaiting the router (`upstream`) is the
    backend's, the rest the gateway's own; a stream's first chunk (`first`) gives its time to first token."""

    __slots__ = ("ticket", "task", "req", "client", "_path", "streaming", "_m", "_t0", "_upstream", "_first",
                 "span")

    def __init__(self, ticket: Ticket, task: Task, req: Any, client: Client | None, path: CallPath,
                 m: CallChildren | None = None, t0: float = 0.0, span: Any = None) -> None:
        self.ticket = ticket
        self.task = task
        self.req = req
        self.client = client
        self._path = path
        self.streaming = False  # handed to `relay`, which settles when the stream ends
        self.span = span  # the request's span, when tracing: what served it and its usage go there
        self._m = m  # set to None once the call's end is counted: counted once, whichever way it ends
        self._t0 = t0
        self._upstream = 0.0
        self._first = 0.0

    def _failed(self, exc: BaseException, deployment: Deployment | None = None) -> None:
        m = self._m
        if m is not None:
            self._m = None
            provider = deployment.config.backend if deployment is not None else None
            if self._first:  # a stream that had its first chunk: its time to first token counts, as a success's
                m.first_token(self._first - self._t0, provider or UNKNOWN)
            m.failed(perf_counter() - self._t0, exc, provider)

    def _served(self, deployment: Deployment) -> None:
        if self.client is not None:
            _held(self.client).update(self._path.served_by(deployment))

    def _release(self, exc: BaseException) -> None:
        """Release, telling the request log what the client was answered."""
        status, code = failure(exc)
        ended = self.ticket.closed  # settled or released already: its row (and body) were queued then
        self.ticket.fail(status, code)
        if self.ticket.principal.bodies and not ended:
            self._keep({"error": {"status": status, "code": code, "message": getattr(exc, "message", None)}})

    def _keep(self, response: Any) -> None:
        """The org keeps request bodies: queue this call's (made JSON-able and redacted off the request path)."""
        t = self.ticket
        if t.principal.bodies and t.log_id is not None and t.gate is not None:
            t.gate.requests.body(t.log_id, t.principal.org_id, t.scope, self.req, response, t.principal.bodies)

    async def run(self, work: Awaitable[tuple[T, Deployment]]) -> tuple[T, Deployment]:
        """Await `(result, deployment)` — cancelled if the client leaves — and settle on the units the result
        shows. Any failure releases."""
        watch = self._path.watch
        began = perf_counter()
        try:
            if self.client is not None and watch is not None:
                result, deployment = await watch(self.client.receive, work)
            else:
                result, deployment = await work
        except BaseException as exc:
            self._release(exc)
            self._failed(exc)
            raise
        upstream = perf_counter() - began
        units = result_units(self.task, self.req, result, self.ticket.estimate)
        self.ticket.settle(units, deployment)
        self._served(deployment)
        m = self._m
        if m is not None:  # counted by Metrics.fold, off the request path
            self._m = None
            total = perf_counter() - self._t0
            m.ended.append((m, total, total - upstream, deployment.config.backend, None, None))
        if self.span is not None:
            self._path.tracing.call_served(self.span, deployment, result, units)  # type: ignore[union-attr]
        if self.ticket.principal.bodies:
            self._keep(result)
        return result, deployment

    async def open(self, opening: Awaitable[tuple[Any, AsyncIterator[Any], Deployment]]
                   ) -> tuple[Any, AsyncIterator[Any], Deployment]:
        """Open a stream: the router pulls its first chunk before anything is answered, so a failure to start keeps
        its HTTP status (and releases the reservation). Hand the result to `relay`."""
        began = perf_counter()
        try:
            first, stream, deployment = await opening
        except BaseException as exc:
            self._release(exc)
            self._failed(exc)
            raise
        self.ticket.first_at = time.monotonic()
        if self._m is not None:  # its time to first token is counted when it ends (`_streamed`, `_failed`)
            self._first = now = perf_counter()
            self._upstream = now - began
        self.streaming = True
        self._served(deployment)
        return first, stream, deployment

    def relay(self, first: Any, stream: AsyncIterator[Any], deployment: Deployment,
              framing: Framing) -> AsyncIterator[bytes]:
        """Frame chunks as they come, then settle. An error after the first byte goes out as the face's error
        event and is not charged; a client that leaves is charged for what it was sent (the usage the stream
        reported, else the input estimate and one token per event sent); a relay closed before it began (the
        client left in between) is released. A stream still open when the server's grace period ends is cut: the
        face's error event goes out, and it is charged for what it was sent, like a client that leaves."""
        self.streaming = True
        relay = _Relay(self, stream)
        relay.frames = self._relay(first, stream, deployment, framing, relay)
        return relay

    async def _relay(self, first: Any, stream: AsyncIterator[Any], deployment: Deployment,
                     framing: Framing, relay: _Relay) -> AsyncIterator[bytes]:
        failed: BaseException | None = None
        left = False  # closed or cancelled mid-stream: the client went away
        events = 0  # stream events sent, less the opening one (a role, no words): the fallback's output tokens
        kept: list[Any] | None = [] if self.ticket.principal.bodies else None  # the org keeps bodies
        try:
            relay.begin()
            head = framing.head()
            if head:
                yield head
            if first is not None:
                events += chunk_events(first) - 1
                if kept is not None:
                    kept.append(first)
                out = framing.chunk(first)
                if out:
                    yield out
                async for chunk in stream:
                    events += chunk_events(chunk)
                    if kept is not None:
                        kept.append(chunk)
                    out = framing.chunk(chunk)
                    if out:
                        yield out
            tail = framing.tail()
            if tail:
                yield tail
        except asyncio.CancelledError:
            if not relay.cut:
                left = True
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # the cancel was the shutdown's, answered here with the error event
            yield framing.error(ShuttingDown("The server is shutting down; the stream was cut at the end of its "
                                             "grace period. Retry the request."))
        except ModelyardError as exc:
            failed = exc
            yield framing.error(exc)
        except Exception:
            failed = InternalError("The stream failed on the server.")
            log.exception("stream failed")
            yield framing.error(failed)
        except BaseException:
            left = True
            raise
        finally:
            relay.unregister()
            if failed is not None:
                self._release(failed)
                self._failed(failed, deployment)
            else:
                used = framing.usage()
                if used is None:
                    used = chat_units(None, self.ticket.estimate, events)
                self.ticket.settle(used, deployment)
                if self._m is not None:
                    self._streamed(used, deployment, left)
                if self.span is not None:
                    self._path.tracing.call_served(self.span, deployment, None, used)  # type: ignore[union-attr]
                if kept is not None:
                    self._keep({"stream": kept})
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    def _streamed(self, used: Units | None, deployment: Deployment, left: bool) -> None:
        """A stream's end, counted: its overhead is the gateway's time before its first chunk; time per output
        token is what the upstream took for each token after the first."""
        if left:
            self._failed(GeneratorExit(), deployment)
            return
        m = self._m
        assert m is not None
        self._m = None
        now = perf_counter()
        backend = deployment.config.backend
        # None: a model host's gate, which prices nothing
        tpot = (now - self._first) / (used.output_tokens - 1) if used is not None and used.output_tokens > 1 else None
        first = self._first - self._t0
        m.ended.append((m, now - self._t0, first - self._upstream, backend, tpot, first))

    def hold(self) -> dict[str, Any]:
        """The reservation as JSON, stored with a job and settled by whichever runner finishes it."""
        if self._m is not None:
            self._m.held()
            self._m = None
        return self.ticket.hold()


class _Relay:
    """A call's relay as an async iterable: a generator closed before it began never runs its `finally`, so this
    settles that case itself (released: nothing was sent) and closes the upstream stream. While it runs it is
    registered with the server's shutdown, which may cut it (`cut`: cancel the task relaying, marked as ours).

    `async for` iterates the relay's generator itself (`__aiter__` hands it out): no layer of ours between the
    server and the generator for each chunk; the generator registers the stream (`begin`) when it starts."""

    __slots__ = ("frames", "_call", "_stream", "_started", "cut", "_unregister")

    def __init__(self, call: Call, stream: AsyncIterator[Any]) -> None:
        self.frames: AsyncIterator[bytes] = None  # type: ignore[assignment]  # set by Call.relay
        self._call = call
        self._stream = stream
        self._started = False
        self.cut = False
        self._unregister: Callable[[], None] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.frames

    async def __anext__(self) -> bytes:
        return await self.frames.__anext__()

    def begin(self) -> None:
        """The relay started, in the task that relays it: registered with the shutdown, which may cut it."""
        self._started = True
        streams = self._call._path.streams
        task = asyncio.current_task()
        if streams is not None and task is not None:
            def cut() -> None:
                if not self.cut:
                    self.cut = True
                    task.cancel()
            self._unregister = streams(cut)

    def unregister(self) -> None:
        if self._unregister is not None:
            self._unregister()
            self._unregister = None

    async def aclose(self) -> None:
        self.unregister()
        if not self._started:
            self._call.ticket.fail(499, "client_closed")
            self._call._failed(GeneratorExit())  # the client left before the stream began
            close = getattr(self._stream, "aclose", None)
            if close is not None:
                await close()
        await self.frames.aclose()  # type: ignore[attr-defined]


class _Admission:
    """`async with calls.start(...) as call`: admits on entry; on exit an unfinished call is released."""

    __slots__ = ("_path", "_args", "_call")

    def __init__(self, path: CallPath, args: tuple[Any, ...]) -> None:
        self._path = path
        self._args = args
        self._call: Call | None = None

    async def __aenter__(self) -> Call:
        self._call = await self._path.admit(*self._args)
        return self._call

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        call = self._call
        if call is None or call.ticket.closed:
            return
        if exc_type is None:
            if call.streaming:
                return  # handed to `relay`, which settles when the stream ends
            # a route that returned without running its call: nothing was served
            log.error("a %s call to %s ended without running; its reservation is released", call.task.value,
                      call.ticket.model_id)
        if exc is not None:
            call._release(exc)  # an exception, even after a stream opened: its relay will never run
        else:
            call.ticket.fail(500, "not_run")
        call._failed(exc if exc is not None else InternalError("The call ended without running."))


class CallPath:
    """Authorization and admission for every surface; settlement of calls and of jobs' holds."""

    def __init__(self, gate: Gate, auth: Authenticator, *, watch: Watch | None = None,
                 streams: Streams | None = None, metrics: Metrics | None = None,
                 tracing: Tracing | None = None) -> None:
        self.gate = gate
        self.auth = auth
        self.watch = watch  # how a call notices its client leaving (the server's disconnect watcher)
        self.streams = streams  # where open streams register to be cut at shutdown (the server's `Shutdown`)
        self.metrics = metrics
        self.tracing = tracing  # None: off; on, auth and the gate are child spans of the request's
        self._served: dict[str, dict[bytes, bytes]] = {}  # deployment key -> its served-by headers, encoded once
        # (request path or the caller's word, model id, task) -> the call's metric children (bounded: `_children`)
        self._metered: dict[tuple[str | None, str, Task], CallChildren] = {}

    def _children(self, key: tuple[str | None, str, Task], from_request: bool) -> CallChildren:
        """A call's metric children the first time its key is seen (`admit` looks them up by it): the request's
        path (or, for work no request carries, the caller's word), the model id and the task. Its dialect label (the
        face the path belongs to, or the caller's word: `batches`, `agents`, a job runner's `jobs`) and its model
        label (a name the catalog does not know is `unknown`) are worked out here, once."""
        where, model_id, task = key
        face = face_of(where) if from_request else (where or "jobs")  # type: ignore[arg-type]
        found = self.metrics.call(face, model_id, task)  # type: ignore[union-attr]
        if len(self._metered) < 4096:  # paths with ids in them (/fal/…/requests/…) must not grow it forever
            self._metered[key] = found
        return found

    def served_by(self, deployment: Deployment) -> dict[bytes, bytes]:
        found = self._served.get(deployment.key)
        if found is None:
            found = self._served[deployment.key] = served_by(deployment)
        return found

    async def authorize(self, client: Client, scope: str | None = None, *, paid: bool = False) -> Principal:
        """Who is calling, with `scope`. Every authenticated request counts once against its org's limits: here,
        as an API request — or, for a route that starts paid work (`paid=True`), at that work's admission, in its
        limit class and kind. Counting uses the same memory/Redis counters as calls; never the database."""
        if self.tracing is not None:  # off, no extra frame: this runs on every request
            return await self._traced_authorize(client, scope, paid)
        principal = await self.auth.authenticate(client, scope)  # type: ignore[arg-type]
        if not paid and not self.gate.passthrough:
            headers, _ = await self.gate.limits.admit(principal.plan, principal.org_id, principal.token_id, "api",
                                                      None)
            publish_headers(client, headers)
        return principal

    async def _traced_authorize(self, client: Client, scope: str | None, paid: bool) -> Principal:
        with self.tracing.span("auth"):  # type: ignore[union-attr]
            principal = await self.auth.authenticate(client, scope)  # type: ignore[arg-type]
            if not paid and not self.gate.passthrough:
                headers, _ = await self.gate.limits.admit(principal.plan, principal.org_id, principal.token_id,
                                                          "api", None)
                publish_headers(client, headers)
            return principal

    async def count_submission(self, principal: Principal, client: Client | None = None) -> None:
        """One job submission against the org's limits (an agent run: its nodes are admitted with count=False)."""
        if not self.gate.passthrough:
            headers, _ = await self.gate.limits.admit(principal.plan, principal.org_id, principal.token_id, "job",
                                                      None)
            publish_headers(client, headers)

    def start(self, principal: Principal, model: Model, task: Task, req: Any, *, client: Client | None = None,
              job: bool = False, estimate: Units | None = None, field: str | None = None) -> _Admission:
        """Admit one unit of paid work (see the module's docstring); use as `async with ... as call`."""
        return _Admission(self, (principal, model, task, req, client, job, estimate, field))

    async def admit(self, principal: Principal, model: Model, task: Task, req: Any, client: Client | None = None,
                    job: bool = False, estimate: Units | None = None, field: str | None = None,
                    field_prefix: str = "", price_factor: float = 1.0, count: bool = True,
                    ref: str | None = None, dialect: str | None = None) -> Call:
        """Plan, limits, content filter, wallet reserve. `req` is the face's request or a job's payload; `field`
        names the filtered input in a refusal when the face calls it something else (Gemini's `contents`),
        `field_prefix` says where a job's payload sits in its body (`payload.`), and `price_factor` is a discount
        on the list price (batch lines). `count=False` is for work whose submission was counted already (an agent
        run's nodes): the class's request count is skipped; its kind's limits, token limits, plan, filter and
        wallet apply. `dialect` labels the call's metrics when no request carries it (a batch line, an agent
        node)."""
        t0 = perf_counter()
        gate = self.gate
        m = None
        if self.metrics is not None:  # one lookup after a key's first call; `_children` makes them
            key = ((client.scope.get("path") or "") if client is not None else dialect, model.id, task)
            m = self._metered.get(key) or self._children(key, client is not None)
        text = named = None
        tracing = self.tracing
        span = None
        if tracing is not None and client is not None:  # an HTTP request's span becomes `{operation} {model}`
            span = tracing.current()
            if span is not None:
                tracing.call_started(span, task, model.id, req)
        try:
            if gate.filters(principal.org_id):
                text, named = filtered_text(task, req)
            admission = gate.admit(principal, model, task, estimate=estimate or estimate_units(task, req),
                                   kind=KIND_OF_TASK.get(task), job=job, text=text,
                                   field=field or (field_prefix + named if named else None),
                                   price_factor=price_factor, count=count, ref=ref)
            if tracing is None:
                ticket = await admission
            else:
                with tracing.span("gate", **{"modelyard.task": task.value, "modelyard.job": job}):
                    ticket = await admission
        except BaseException as exc:
            if m is not None:
                m.failed(0.0, exc, admitted=False)
                reason = refusal_reason(exc)
                if reason is not None:
                    m.refused(reason)
            raise
        publish_headers(client, ticket.headers)
        if m is not None:
            m.in_flight.value += 1
            ticket.metered = m.usage  # its settlement counts tokens and cost there, with no lookup
        if client is not None:
            ticket.scope = client.scope  # the request log reads the request id, path and traceparent off it
        return Call(ticket, task, req, client, self, m, t0, span)

    async def settle_hold(self, hold: dict[str, Any], units: Units | None, *, ok: bool,
                          deployment: Any = None, record: bool = True) -> None:
        """Finish a job's reservation: charged on success, refunded on failure or cancel (idempotent per job);
        `record=False` for a reservation whose job was never written (refunded, no usage row)."""
        await self.gate.settle_hold(hold, units, ok=ok, deployment=deployment, record=record)
