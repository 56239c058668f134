"""Prometheus text exposition of the router's per-deployment counters, each model's state and the write-behind."""

from __future__ import annotations

from typing import Any

from ..types import ModelState


def _labels(**kw: Any) -> str:
    def esc(v: Any) -> str:
        return str(v if v is not None else "").replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in kw.items()) + "}"


def write_behind_lines(stats: dict[str, Any]) -> list[str]:
    """The off-path writer's backlog: what is queued in memory, what waits in the spool, and how old it is."""
    lines = [
        "# HELP modelyard_write_behind_queued Records queued in memory for the database, by kind.",
        "# TYPE modelyard_write_behind_queued gauge",
    ]
    for kind, n in sorted(stats["queued_by_kind"].items()):
        lines.append(f"modelyard_write_behind_queued{_labels(kind=kind)} {n}")
    lines += [
        "# HELP modelyard_write_behind_spool_records Records waiting in the spool files for the database.",
        "# TYPE modelyard_write_behind_spool_records gauge",
        f"modelyard_write_behind_spool_records {stats['spool_records']}",
        "# HELP modelyard_write_behind_spool_bytes Size of the spool files.",
        "# TYPE modelyard_write_behind_spool_bytes gauge",
        f"modelyard_write_behind_spool_bytes {stats['spool_bytes']}",
        "# HELP modelyard_write_behind_oldest_unwritten_seconds Age of the oldest record not yet in the database.",
        "# TYPE modelyard_write_behind_oldest_unwritten_seconds gauge",
        f"modelyard_write_behind_oldest_unwritten_seconds {stats['oldest_unwritten_seconds']}",
        "# HELP modelyard_write_behind_failing 1 while the last database write failed.",
        "# TYPE modelyard_write_behind_failing gauge",
        f"modelyard_write_behind_failing {1 if stats['failing'] else 0}",
        "# HELP modelyard_write_behind_written_total Records written to the database.",
        "# TYPE modelyard_write_behind_written_total counter",
        f"modelyard_write_behind_written_total {stats['written']}",
        "# HELP modelyard_write_behind_rejected_total Records the database refused (kept in spool/rejected.jsonl).",
        "# TYPE modelyard_write_behind_rejected_total counter",
        f"modelyard_write_behind_rejected_total {stats['rejected']}",
    ]
    return lines


async def render(router: Any, writer: Any = None) -> str:
    lines = [
        "# HELP modelyard_deployment_in_flight Requests running on a deployment now.",
        "# TYPE modelyard_deployment_in_flight gauge",
        "# HELP modelyard_deployment_requests_total Finished calls on a deployment, by outcome.",
        "# TYPE modelyard_deployment_requests_total counter",
        "# HELP modelyard_deployment_latency_seconds Time of successful calls on a deployment.",
        "# TYPE modelyard_deployment_latency_seconds summary",
        "# HELP modelyard_deployment_cooling_down 1 while a deployment sits out after repeated failures.",
        "# TYPE modelyard_deployment_cooling_down gauge",
        "# HELP modelyard_model_state 1 for the state each model is in (offline, standby, warming, online).",
        "# TYPE modelyard_model_state gauge",
    ]
    for model in router.catalog:
        for d in router.deployments(model):
            s = router.stats[d.key]
            base = dict(model=model.id, deployment=d.name, backend=d.config.backend, region=d.config.region)
            lines.append(f"modelyard_deployment_in_flight{_labels(**base)} {s.in_flight}")
            lines.append(f"modelyard_deployment_requests_total{_labels(**base, outcome='success')} {s.successes}")
            lines.append(f"modelyard_deployment_requests_total{_labels(**base, outcome='failure')} {s.failures}")
            lines.append(f"modelyard_deployment_latency_seconds_sum{_labels(**base)} {s.latency_total:.6f}")
            lines.append(f"modelyard_deployment_latency_seconds_count{_labels(**base)} {s.successes}")
            lines.append(f"modelyard_deployment_cooling_down{_labels(**base)} {1 if s.cooldown_until else 0}")
        state = await router.model_state(model)
        for candidate in ModelState:
            lines.append(f"modelyard_model_state{_labels(model=model.id, state=candidate.value)} "
                         f"{1 if candidate == state else 0}")
    if writer is not None:
        lines += write_behind_lines(writer.stats())
    return "\n".join(lines) + "\n"
