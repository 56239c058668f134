"""The metric families of one process, on a registry its app owns; children come resolved per label set.

Two apps in one process never share a counter: each `Metrics` builds its own families on its own
`CollectorRegistry` (lock-free ones from values.py: the hot path only adds to plain numbers). Under `serve --workers N` the CLI points `PROMETHEUS_MULTIPROC_DIR` at a fresh folder before the
worker processes start; each worker copies its numbers into prometheus-client's per-process files once a second
(`sync`), and a scrape, answered by any one worker, sums the files: the numbers are the whole server's, the other
workers' as of their last second (see docs/metrics.md for each gauge's rule).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from ..types import Task
from . import genai
from .children import UNKNOWN, CallChildren, DeploymentChildren, UsageChildren
from .values import Family

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NAMES = ("modelyard", "otel", "both")


def multiprocess() -> bool:
    """Whether prometheus-client keeps values in per-process files (chosen when it was first imported)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False)) and bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess(folder: Path) -> None:
    """For `serve --workers N`, before the workers start: an empty folder for their value files (a previous run's
    would add its counts to ours), named in the environment the workers inherit."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)


class Metrics:
    """Every family this process exports. `names` picks the call and token series' names: ours (`modelyard_…`), the
    OpenTelemetry GenAI conventions' (`gen_ai_…`), or both; the rest have no convention and keep ours."""

    def __init__(self, catalog: Any, *, names: str = "modelyard") -> None:
        if names not in NAMES:
            raise ValueError(f"metrics_names must be one of {', '.join(NAMES)}")
        self.catalog = catalog
        self.registry = r = CollectorRegistry()
        # What calls ended with, not yet added up (`fold`): a call appends a tuple and moves on; the tick of the
        # write-behind, a scrape (the collector registered first, below) and `sync` add them up in a tight loop
        self.ended: list[tuple[Any, ...]] = []  # (CallChildren, total, overhead, provider, tpot, ttft)
        self.settled: list[tuple[Any, ...]] = []  # (UsageChildren, task, input, output, price, deployment)
        self.observed: list[tuple[Any, float]] = []  # (Buckets, value)
        r.register(_Fold(self))
        own, otel = names in ("modelyard", "both"), names in ("otel", "both")
        call = ["dialect", "model", "task"]
        shared = multiprocess()  # values in prometheus-client's per-process files; else plain numbers (values.py)
        # Either way the hot path adds to our lock-free families. Under multiprocess mode each is mirrored by a
        # prometheus-client metric whose per-process file `sync` brings up to date (once a second, and before a
        # scrape): a call then costs plain additions, not a dozen locked writes to a memory-mapped file.
        self._mirrors: list[tuple[Family, Any, dict[tuple[str, ...], Any]]] = []

        def add(family: Family, mirror: Any = None) -> Family:
            if mirror is None:
                r.register(family)
            else:
                self._mirrors.append((family, mirror, {}))
            return family

        def counter(name: str, doc: str, labels: Any = (), *, registry: Any) -> Any:
            return add(Family("counter", name, doc, labels), Counter(name, doc, labels, registry=r) if shared else None)

        def gauge(name: str, doc: str, labels: Any = (), *, registry: Any, multiprocess_mode: str) -> Any:
            return add(Family("gauge", name, doc, labels),
                       Gauge(name, doc, labels, registry=r, multiprocess_mode=multiprocess_mode) if shared else None)

        def histogram(name: str, doc: str, labels: Any = (), *, registry: Any, buckets: Any) -> Any:
            return add(Family("histogram", name, doc, labels, buckets),
                       Histogram(name, doc, labels, registry=r, buckets=buckets) if shared else None)

        def summary(name: str, doc: str, labels: Any = (), *, registry: Any) -> Any:
            return add(Family("summary", name, doc, labels), Summary(name, doc, labels, registry=r) if shared else None)

        # ---- calls (the call path)
        self.requests = counter("modelyard_requests", "Calls through the call path, by how they ended (status class "
                                "2xx/4xx/5xx, or cancelled when the client left).", [*call, "status_class"], registry=r)
        self.errors = counter("modelyard_request_errors", "Calls that failed or were refused, by error type.",
                              [*call, "error_type"], registry=r)
        self.in_flight = gauge("modelyard_requests_in_flight", "Calls admitted and not yet ended.", call, registry=r,
                               multiprocess_mode="livesum")
        self.overhead = histogram("modelyard_gateway_overhead_seconds", "The gateway's own time in a call: its "
                                  "duration less the time spent waiting on the router and backend (for a stream, up "
                                  "to its first chunk).", call, registry=r, buckets=genai.OVERHEAD)
        self.refusals = counter("modelyard_refusals", "Calls refused at admission: rate limits, wallet, plan, content "
                                "filter.", ["dialect", "model", "reason"], registry=r)
        self.duration = histogram("modelyard_request_duration_seconds", "Calls from admission to their end.", call,
                                  registry=r, buckets=genai.DURATION) if own else None
        self.ttft = histogram("modelyard_time_to_first_token_seconds", "Streams: admission to the first chunk.",
                              ["dialect", "model"], registry=r, buckets=genai.TTFT) if own else None
        self.tpot = histogram("modelyard_time_per_output_token_seconds", "Streams: time per output token after the "
                              "first.", ["dialect", "model"], registry=r, buckets=genai.TPOT) if own else None
        self.tokens = counter("modelyard_tokens", "Tokens of settled calls and jobs, by type (input, output).",
                              ["model", "token_type"], registry=r) if own else None
        self.cost = counter("modelyard_cost_dollars", "List price of settled calls and jobs, in US dollars.",
                            ["model"], registry=r)
        genai_labels = ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_provider_name"]
        self.gen_duration = histogram("gen_ai_server_request_duration_seconds", "GenAI server request duration.",
                                      [*genai_labels, "error_type"], registry=r, buckets=genai.DURATION) if otel else None
        self.gen_ttft = histogram("gen_ai_server_time_to_first_token_seconds", "Time to generate the first token.",
                                  genai_labels, registry=r, buckets=genai.TTFT) if otel else None
        self.gen_tpot = histogram("gen_ai_server_time_per_output_token_seconds", "Time per output token generated "
                                  "after the first.", genai_labels, registry=r, buckets=genai.TPOT) if otel else None
        self.gen_tokens = histogram("gen_ai_client_token_usage", "Tokens used per call, by type.",
                                    [*genai_labels, "gen_ai_token_type"], registry=r,
                                    buckets=genai.TOKENS) if otel else None

        # ---- routing (the names /metrics had before prometheus-client; kept)
        dep = ["model", "deployment", "backend", "region"]
        self.deployment_in_flight = gauge("modelyard_deployment_in_flight", "Requests running on a deployment now.",
                                          dep, registry=r, multiprocess_mode="livesum")
        self.deployment_requests = counter("modelyard_deployment_requests", "Finished calls on a deployment, by "
                                           "outcome.", [*dep, "outcome"], registry=r)
        self.deployment_latency = summary("modelyard_deployment_latency_seconds", "Time of successful calls on a "
                                          "deployment.", dep, registry=r)
        self.deployment_cooling = gauge("modelyard_deployment_cooling_down", "1 while a deployment sits out after "
                                        "repeated failures (the answering process's view).", dep, registry=r,
                                        multiprocess_mode="livemostrecent")
        self.model_state = gauge("modelyard_model_state", "1 for the state each model is in (offline, standby, "
                                 "warming, online).", ["model", "state"], registry=r, multiprocess_mode="livemostrecent")
        self.upstream = histogram("modelyard_upstream_duration_seconds", "Each attempt on a deployment's backend "
                                  "(a stream: until it ends).", ["model", "deployment", "backend", "outcome"],
                                  registry=r, buckets=genai.DURATION)
        self.retries = counter("modelyard_retries", "Attempts that failed retryably and moved to the next deployment.",
                               ["model", "deployment"], registry=r)
        self.fallbacks = counter("modelyard_fallbacks", "Calls moved on to a fallback model.", ["model", "fallback"],
                                 registry=r)
        self.cooldowns = counter("modelyard_cooldowns", "Times a deployment was set to cool down.",
                                 ["model", "deployment"], registry=r)

        # ---- the write-behind (same names as before; now summed over processes)
        self.wb_queued = gauge("modelyard_write_behind_queued", "Records queued in memory for the database, by kind.",
                               ["kind"], registry=r, multiprocess_mode="livesum")
        self.wb_spool_records = gauge("modelyard_write_behind_spool_records", "Records waiting in the spool files "
                                      "for the database.", registry=r, multiprocess_mode="livemax")
        self.wb_spool_bytes = gauge("modelyard_write_behind_spool_bytes", "Size of the spool files.", registry=r,
                                    multiprocess_mode="livemax")
        self.wb_oldest = gauge("modelyard_write_behind_oldest_unwritten_seconds", "Age of the oldest record not yet "
                               "in the database.", registry=r, multiprocess_mode="livemax")
        self.wb_failing = gauge("modelyard_write_behind_failing", "1 while the last database write failed.",
                                registry=r, multiprocess_mode="livemax")
        self.wb_written = counter("modelyard_write_behind_written", "Records written to the database.", registry=r)
        self.wb_rejected = counter("modelyard_write_behind_rejected", "Records the database refused (dropped from "
                                   "the queue, kept in spool/rejected.jsonl).", registry=r)
        self.wb_spooled = counter("modelyard_write_behind_spooled", "Records moved from memory to the spool files "
                                  "(the database lagged or failed; each is written later, on replay).", registry=r)
        self.wb_flush = histogram("modelyard_write_behind_flush_seconds", "One batch write to the database, by kind.",
                                  ["kind"], registry=r, buckets=genai.BACKGROUND)

        # ---- jobs, runners, workers, the database
        self.jobs = gauge("modelyard_jobs", "Jobs pending (due or waiting to retry) and running, from the database.",
                          ["status"], registry=r, multiprocess_mode="livemostrecent")
        self.job_oldest = gauge("modelyard_job_oldest_pending_seconds", "How long the oldest due pending job has "
                                "waited.", registry=r, multiprocess_mode="livemostrecent")
        self.job_claim = histogram("modelyard_job_claim_latency_seconds", "From a job being due to a runner claiming "
                                   "it.", ["task"], registry=r, buckets=genai.BACKGROUND)
        self.jobs_finished = counter("modelyard_jobs_finished", "Jobs that reached a final state here.",
                                     ["task", "status"], registry=r)
        self.runner_beat = gauge("modelyard_job_runner_heartbeat_timestamp_seconds", "When a runner loop last made "
                                 "a pass (Unix time; the newest of this server's runners).", registry=r,
                                 multiprocess_mode="livemax")
        self.lease_renewals = counter("modelyard_job_lease_renewals", "Job lease heartbeats, by outcome (renewed, "
                                      "lost, error).", ["outcome"], registry=r)
        self.workers_alive = gauge("modelyard_workers_alive", "Model hosts (modelyard worker) beating in time.",
                                   registry=r, multiprocess_mode="livemostrecent")
        self.worker_beat_age = gauge("modelyard_worker_heartbeat_age_seconds", "Seconds since each model host's last "
                                     "heartbeat.", ["worker"], registry=r, multiprocess_mode="livemostrecent")
        self.db_pool = gauge("modelyard_db_pool_in_use", "Database connections checked out of the pool.",
                             registry=r, multiprocess_mode="livesum")
        self.loop_tasks = gauge("modelyard_event_loop_tasks", "asyncio tasks alive in the event loop (read at the "
                                "scrape): one per request in progress plus the background loops.", registry=r,
                                multiprocess_mode="livesum")

        self.scraped_at = 0.0  # when the database-derived gauges were last read (server/metrics.py caches them)
        self._calls: dict[tuple[str, str, Task], CallChildren] = {}
        self._usage: dict[str, UsageChildren] = {}
        self._deployments: dict[str, DeploymentChildren] = {}
        self._fallbacks: dict[tuple[str, str], Any] = {}
        self._claims: dict[str, Any] = {}
        self._wb: dict[str, tuple[Any, Any]] = {}

    # ---------------------------------------------------------------- children, resolved once

    def model_label(self, name: str) -> str:
        """A catalog id, or `unknown`: a name the catalog does not know never becomes a label value."""
        model = self.catalog.find(name)
        return model.id if model is not None else UNKNOWN

    def call(self, face: str, model_id: str, task: Task) -> CallChildren:
        key = (face, model_id, task)
        found = self._calls.get(key)
        if found is None:
            label = self.model_label(model_id)
            if label != model_id:
                key = (face, label, task)  # an unknown name is never a key either: the cache stays bounded
                found = self._calls.get(key)
                if found is not None:
                    return found
            found = self._calls[key] = CallChildren(self, face, label, task)
        return found

    def usage(self, model_id: str) -> UsageChildren:
        found = self._usage.get(model_id)
        if found is None:
            label = self.model_label(model_id)
            found = self._usage.get(label)
            if found is None:
                found = self._usage[label] = UsageChildren(self, label)
        return found

    def deployment(self, d: Any, stats: Any) -> DeploymentChildren:
        """`d`'s series; `stats` (the router's `DeploymentStats` for it) keeps its in-flight and outcome counts."""
        found = self._deployments.get(d.key)
        if found is None:
            found = self._deployments[d.key] = DeploymentChildren(self, d.model_id, d.name, d.config.backend,
                                                                  d.config.region or "", stats)
        return found

    def fell_back(self, model_id: str, fallback_id: str) -> None:
        child = self._fallbacks.get((model_id, fallback_id))
        if child is None:
            child = self._fallbacks[(model_id, fallback_id)] = self.fallbacks.labels(model_id, fallback_id)
        child.inc()

    def claimed(self, task: str, waited: float) -> None:
        child = self._claims.get(task)
        if child is None:
            child = self._claims[task] = self.job_claim.labels(task)
        child.observe(waited if waited > 0 else 0.0)

    # ---------------------------------------------------------------- the write-behind's observer

    def wrote(self, kind: str, rows: int, seconds: float) -> None:
        self.wb_written.inc(rows)
        self.wb_flush.labels(kind).observe(seconds)

    def rejected(self, kind: str, rows: int) -> None:
        self.wb_rejected.inc(rows)

    def spooled(self, rows: int) -> None:
        self.wb_spooled.inc(rows)

    def fold(self) -> None:
        """Add up what calls appended since the last fold (`ended`, `settled`, `observed`). Never awaits: a call
        appending meanwhile is impossible (one event loop), and each list is emptied in place."""
        ended, settled, observed = self.ended, self.settled, self.observed
        # inline additions, not a method call per call and series (see values.Buckets)
        if ended:
            items = ended[:]
            ended.clear()
            genai = self.gen_duration is not None
            for c, total, overhead, provider, tpot, ttft in items:
                c.ok.value += 1
                c.in_flight.value -= 1
                b = c.duration
                if b is not None:
                    b.sum += total
                    b.counts[bisect_left(b.bounds, total)] += 1
                if overhead < 0.0:
                    overhead = 0.0
                b = c.overhead
                b.sum += overhead
                b.counts[bisect_left(b.bounds, overhead)] += 1
                if ttft is not None:
                    b = c.ttft
                    if b is not None:
                        b.sum += ttft
                        b.counts[bisect_left(b.bounds, ttft)] += 1
                if tpot is not None:
                    b = c.tpot
                    if b is not None:
                        b.sum += tpot
                        b.counts[bisect_left(b.bounds, tpot)] += 1
                if genai:
                    c.genai_succeeded(total, provider, ttft, tpot)
        if settled:
            items = settled[:]
            settled.clear()
            genai = self.gen_tokens is not None
            for u, task, input_tokens, output_tokens, price, deployment in items:
                if genai:
                    u.record(task, input_tokens, output_tokens, price, deployment)
                    continue
                if u.input is not None:
                    if input_tokens:
                        u.input.value += input_tokens
                    if output_tokens:
                        u.output.value += output_tokens
                if price:
                    u.cost.value += price / 1_000_000
        if observed:
            items = observed[:]
            observed.clear()
            for b, value in items:
                b.sum += value
                b.counts[bisect_left(b.bounds, value)] += 1

    async def fold_forever(self, every: float = 1.0) -> None:
        """Where no write-behind ticks (a model host): fold once a second, so the lists stay short."""
        while True:
            await asyncio.sleep(every)
            self.fold()

    def writer_stats(self, stats: dict[str, Any]) -> None:
        """Publish the writer's backlog (each tick, and at a scrape); fold what calls appended."""
        self.fold()
        for kind, n in stats["queued_by_kind"].items():
            self.wb_queued.labels(kind).set(n)
        self.wb_spool_records.set(stats["spool_records"])
        self.wb_spool_bytes.set(stats["spool_bytes"])
        self.wb_oldest.set(stats["oldest_unwritten_seconds"])
        self.wb_failing.set(1 if stats["failing"] else 0)

    # ---------------------------------------------------------------- the scrape

    def sync(self) -> None:
        """Multiprocess mode: write what changed since the last sync into this process's value files, as totals
        (each file is this process's alone). Counters and histograms go through the values prometheus-client's
        own `inc` and `observe` add to (`_value`; `_buckets`, one per bound, not cumulative, and `_sum`; a
        summary's `_count` and `_sum`); gauges through `set`, which also stamps the live-most-recent ones."""
        self.fold()
        for family, mirror, seen in self._mirrors:
            kind = family.kind
            for key, child in list(family.children.items()):
                now = child.value if kind in ("counter", "gauge") else (child.sum, *child.counts)
                if seen.get(key) == now:
                    continue
                seen[key] = now
                target = mirror.labels(*key) if key else mirror
                if kind == "gauge":
                    target.set(now)
                elif kind == "counter":
                    target._value.set(now)
                elif kind == "summary":
                    target._count.set(sum(child.counts))
                    target._sum.set(child.sum)
                else:
                    target._sum.set(child.sum)
                    for value, n in zip(target._buckets, child.counts):
                        value.set(n)

    async def sync_forever(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.sync()

    def exposition(self) -> bytes:
        """The text format: this registry's values, or under multiprocess mode every process's files, merged."""
        if multiprocess():
            self.sync()  # this process's own numbers as of now; the others' as of their last sync (≤ 1 s)
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=os.environ[MULTIPROC_ENV])
            return generate_latest(merged)
        return generate_latest(self.registry)

    def close(self) -> None:
        """At shutdown: this process's live gauges leave the sums (multiprocess mode)."""
        if multiprocess():
            self.sync()  # the last calls' counts stay in this process's files (counters outlive it)
            mark_process_dead(os.getpid(), os.environ[MULTIPROC_ENV])


class _Fold:
    """Registered first on the app's registry: every collection (a scrape, `generate_latest`) folds before the
    families are read, so what calls appended is in the numbers."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        self._metrics.fold()
        return []
