"""Prometheus text exposition of the router's per-deployment counters and each model's state."""

from __future__ import annotations

from typing import Any

from ..types import ModelState


def _labels(**kw: Any) -> str:
    def esc(v: Any) -> str:
        return str(v if v is not None else "").replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in kw.items()) + "}"


async def render(router: Any) -> str:
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
    return "\n".join(lines) + "\n"
