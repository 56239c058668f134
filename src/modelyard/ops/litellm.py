"""`modelyard import litellm config.yaml`: a LiteLLM proxy config turned into a Modelyard config, with a report.

What maps (docs/migrating.md has the table): each `model_list` entry is a deployment of the model its `model_name`
names (entries sharing a name are one model's deployments, balanced by `weight`); the `litellm_params.model`
prefix picks the backend kind (openai, azure via its OpenAI v1 API, anthropic, gemini, ollama and vLLM and the
OpenAI-compatible clouds through the openai backend at their base URL); `os.environ/NAME` becomes `${NAME}`;
`router_settings`/`litellm_settings` fallbacks, cooldown and timeouts become the models' `fallbacks`,
`cooldown_seconds`/`cooldown_failures` and deployment timeouts; `model_group_alias` becomes aliases;
`general_settings.master_key` becomes `admin_key`. Everything else is listed in the report, never dropped silently.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

# prefix -> (our backend, default base URL or None when the config must give one, path appended to api_base)
OPENAI_COMPATIBLE: dict[str, tuple[str | None, str]] = {
    "openai": ("https://api.openai.com/v1", ""),
    "text-completion-openai": ("https://api.openai.com/v1", ""),
    "hosted_vllm": (None, "/v1"),
    "vllm": (None, "/v1"),
    "ollama": ("http://localhost:11434", "/v1"),
    "ollama_chat": ("http://localhost:11434", "/v1"),
    "groq": ("https://api.groq.com/openai/v1", ""),
    "mistral": ("https://api.mistral.ai/v1", ""),
    "deepseek": ("https://api.deepseek.com/v1", ""),
    "together_ai": ("https://api.together.xyz/v1", ""),
    "openrouter": ("https://openrouter.ai/api/v1", ""),
    "fireworks_ai": ("https://api.fireworks.ai/inference/v1", ""),
    "xai": ("https://api.x.ai/v1", ""),
    "lm_studio": ("http://localhost:1234/v1", ""),
}
NATIVE = {"anthropic": ("anthropic", "https://api.anthropic.com/v1"),
          "gemini": ("gemini", "https://generativelanguage.googleapis.com/v1beta")}
# model_info.mode -> our model type
MODES = {"chat": "text", "completion": "text", "embedding": "embedding", "image_generation": "image",
         "audio_transcription": "audio", "audio_speech": "audio", "rerank": "rerank", "moderation": "moderation"}
# litellm_params we carry, by our deployment field; anything else in litellm_params is reported
_ENV = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")


def _env(value: Any) -> Any:
    """`os.environ/NAME` -> `${NAME}` (Modelyard reads it when the config loads), in any string of the tree."""
    if isinstance(value, str):
        m = _ENV.match(value.strip())
        return f"${{{m.group(1)}}}" if m else value
    if isinstance(value, list):
        return [_env(v) for v in value]
    if isinstance(value, dict):
        return {k: _env(v) for k, v in value.items()}
    return value


def _with_path(base: str, path: str) -> str:
    base = base.rstrip("/")
    return base if not path or base.endswith(path) else base + path


class Converter:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.report: list[str] = []
        self.models: dict[str, dict[str, Any]] = {}  # model_name -> our model entry, in the file's order

    def note(self, text: str) -> None:
        self.report.append(text)

    def convert(self) -> dict[str, Any]:
        out: dict[str, Any] = {"builtin_models": False}
        for i, entry in enumerate(self.data.get("model_list") or []):
            self._entry(i, entry)
        router = self.data.get("router_settings") or {}
        lib = self.data.get("litellm_settings") or {}
        general = self.data.get("general_settings") or {}
        self._routing(out, router, lib)
        self._general(out, general)
        for section in ("environment_variables", "litellm_settings", "router_settings", "general_settings"):
            self._leftovers(section)
        models = [m for m in self.models.values() if m["deployments"]]
        for m in self.models.values():
            if not m["deployments"]:
                self.note(f"model '{m['id']}': no deployment could be carried over, so the model was left out")
        out["models"] = models
        return out

    # ---------------------------------------------------------------- model_list

    def _entry(self, i: int, entry: dict[str, Any]) -> None:
        name = entry.get("model_name")
        params = dict(entry.get("litellm_params") or {})
        if not name or not params.get("model"):
            self.note(f"model_list[{i}]: no model_name or litellm_params.model; skipped")
            return
        info = entry.get("model_info") or {}
        model = self.models.setdefault(name, {"id": name, "deployments": []})
        mode = info.get("mode")
        if mode:
            if mode in MODES:
                model["type"] = MODES[mode]
            else:
                self.note(f"model '{name}': model_info.mode '{mode}' has no Modelyard type; left as text")
        if "input_cost_per_token" in info or "output_cost_per_token" in info:
            model["price"] = {"input_per_1m": float(info.get("input_cost_per_token") or 0) * 1e6,
                              "output_per_1m": float(info.get("output_cost_per_token") or 0) * 1e6}
        where = f"model '{name}' ({params['model']})"
        dep = self._deployment(where, params)
        if dep is None:
            return
        name_ = info.get("id") or f"{dep.pop('_kind')}-{len(model['deployments']) + 1}"
        dep.pop("_kind", None)
        order = ("name", "backend", "base_url", "model", "api_key", "headers")
        dep = {"name": name_, **{k: dep[k] for k in order[1:] if k in dep},
               **{k: v for k, v in dep.items() if k not in order}}
        model["deployments"].append(dep)
        for key in ("rpm", "tpm"):
            if key in params or key in entry:
                self.note(f"{where}: {key} {params.get(key, entry.get(key))} not carried: Modelyard limits "
                          f"requests and tokens per plan and key (plans:), and concurrency per deployment "
                          f"(max_concurrency)")
                params.pop(key, None)
        rest = sorted(k for k in params if k not in ("model", "api_key", "api_base", "base_url", "api_version",
                                                     "timeout", "stream_timeout", "weight", "organization",
                                                     "extra_headers", "max_parallel_requests", "region_name",
                                                     "vertex_project", "vertex_location"))
        if rest:
            self.note(f"{where}: litellm_params {', '.join(rest)} not carried (no Modelyard equivalent; "
                      f"per-request defaults belong to the client)")

    def _deployment(self, where: str, p: dict[str, Any]) -> dict[str, Any] | None:
        provider, _, upstream = str(p["model"]).partition("/")
        if not upstream:
            provider, upstream = "openai", provider  # LiteLLM's default provider
        api_base = _env(p.get("api_base") or p.get("base_url"))
        dep: dict[str, Any] = {"model": upstream, "_kind": provider.replace("_", "-")}
        if provider == "azure":
            if not api_base:
                self.note(f"{where}: azure without api_base; skipped")
                return None
            # the Azure OpenAI v1 API: OpenAI's paths under /openai/v1, the deployment as the model, key in api-key
            dep.update(backend="openai", base_url=_with_path(str(api_base), "/openai/v1"))
            if p.get("api_key"):
                dep["headers"] = {"api-key": _env(p["api_key"])}
            if p.get("api_version"):
                self.note(f"{where}: api_version {p['api_version']} dropped: mapped to Azure's OpenAI v1 API "
                          f"(<resource>/openai/v1, no api-version), which the resource must offer")
        elif provider in NATIVE:
            backend, default = NATIVE[provider]
            dep.update(backend=backend, base_url=api_base or default)
        elif provider in OPENAI_COMPATIBLE:
            default, path = OPENAI_COMPATIBLE[provider]
            base = api_base or default
            if base is None:
                self.note(f"{where}: {provider} without api_base (LiteLLM's in-process vLLM); point a deployment "
                          f"at a vLLM server's /v1 by hand; skipped")
                return None
            dep.update(backend="openai", base_url=_with_path(str(base), path))
        elif provider in ("vertex_ai", "vertex_ai_beta"):
            self.note(f"{where}: Vertex AI (service-account auth) is not supported; use gemini/ with an API key, "
                      f"or an OpenAI-compatible endpoint in front of Vertex; skipped")
            return None
        else:
            self.note(f"{where}: provider '{provider}' has no Modelyard backend; give it an OpenAI-compatible "
                      f"base_url by hand if it has one; skipped")
            return None
        if p.get("api_key") and "headers" not in dep:
            dep["api_key"] = _env(p["api_key"])
        headers = dict(_env(p.get("extra_headers") or {}))
        if p.get("organization"):
            headers["OpenAI-Organization"] = _env(p["organization"])
        if headers:
            dep["headers"] = {**dep.get("headers", {}), **headers}
        if p.get("timeout") is not None:
            dep["timeout"] = float(p["timeout"])
        if p.get("stream_timeout") is not None:
            dep["first_byte_timeout"] = float(p["stream_timeout"])
            self.note(f"{where}: stream_timeout became first_byte_timeout (seconds until the upstream answers)")
        if p.get("weight") is not None:
            dep["weight"] = float(p["weight"])
        if p.get("max_parallel_requests") is not None:
            dep["max_concurrency"] = int(p["max_parallel_requests"])
        if p.get("region_name"):
            dep["region"] = str(p["region_name"])
        return dep

    # ---------------------------------------------------------------- router_settings, litellm_settings

    def _routing(self, out: dict[str, Any], router: dict[str, Any], lib: dict[str, Any]) -> None:
        both = {**lib, **router}  # router_settings wins where both say
        aliases: set[str] = set()
        live = {name for name, m in self.models.items() if m["deployments"]}  # models that were carried over
        for alias, target in (router.get("model_group_alias") or {}).items():
            target = target.get("model") if isinstance(target, dict) else target
            if target in live:
                self.models[target].setdefault("aliases", []).append(alias)
                aliases.add(alias)
            else:
                self.note(f"model_group_alias '{alias}' -> '{target}' left out: no such model")
        for item in both.get("fallbacks") or []:
            for name, targets in (item or {}).items():
                if name not in live:
                    self.note(f"fallbacks: '{name}' is not a model carried over; its fallbacks were left out")
                    continue
                known = [t for t in targets or [] if t in live or t in aliases]
                for t in targets or []:
                    if t not in known:
                        self.note(f"fallbacks: '{name}' -> '{t}' left out: '{t}' is not a model carried over")
                self.models[name]["fallbacks"] = known
        for key in ("context_window_fallbacks", "content_policy_fallbacks", "default_fallbacks"):
            if both.get(key):
                self.note(f"{key} not carried: Modelyard falls back on failures only (models' fallbacks:)")
        if both.get("cooldown_time") is not None:
            out["cooldown_seconds"] = float(both["cooldown_time"])
        if both.get("allowed_fails") is not None:
            out["cooldown_failures"] = max(1, int(both["allowed_fails"]))
            self.note("allowed_fails became cooldown_failures: Modelyard counts failures in a row, LiteLLM per "
                      "minute")
        if both.get("num_retries") is not None:
            self.note(f"num_retries {both['num_retries']} not carried: Modelyard tries each deployment of a model "
                      f"once, then its fallbacks; add deployments or fallbacks for more attempts")
        timeout = both.get("timeout", both.get("request_timeout"))
        if timeout is not None:
            for m in self.models.values():
                for d in m["deployments"]:
                    d.setdefault("timeout", float(timeout))
        if router.get("redis_host") or router.get("redis_url"):
            password = f":{_env(router['redis_password'])}@" if router.get("redis_password") else ""
            url = _env(router.get("redis_url")) or \
                f"redis://{password}{_env(router['redis_host'])}:{_env(router.get('redis_port', 6379))}"
            out["redis_url"] = url
        if router.get("routing_strategy") and router["routing_strategy"] != "simple-shuffle":
            self.note(f"routing_strategy {router['routing_strategy']}: Modelyard routes to the least busy "
                      f"deployment by weight; nothing to set")

    def _general(self, out: dict[str, Any], general: dict[str, Any]) -> None:
        key = general.get("master_key")
        if key:
            out["admin_key"] = _env(key)
            if not str(out["admin_key"]).startswith("${"):
                self.note("master_key was written into the config as admin_key: move it to MODELYARD_ADMIN_KEY or "
                          "${file:/path}")
        if general.get("database_url"):
            self.note("database_url not carried: LiteLLM's tables are not Modelyard's; give Modelyard a database "
                      "of its own (database_url)")

    def _leftovers(self, section: str) -> None:
        carried = {"router_settings": {"fallbacks", "context_window_fallbacks", "content_policy_fallbacks",
                                       "default_fallbacks", "cooldown_time", "allowed_fails", "num_retries",
                                       "timeout", "model_group_alias", "redis_host", "redis_port", "redis_url",
                                       "redis_password", "routing_strategy"},
                   "litellm_settings": {"fallbacks", "context_window_fallbacks", "content_policy_fallbacks",
                                        "default_fallbacks", "num_retries", "request_timeout", "cooldown_time",
                                        "allowed_fails"},
                   "general_settings": {"master_key", "database_url"},
                   "environment_variables": set()}[section]
        rest = sorted(k for k in (self.data.get(section) or {}) if k not in carried)
        if rest:
            self.note(f"{section}: {', '.join(rest)} not carried")


def convert(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(Modelyard config, report lines) for a LiteLLM proxy config's data."""
    conv = Converter(data)
    return conv.convert(), conv.report


def import_litellm(source: str, output: str, *, force: bool = False) -> int:
    try:
        data = yaml.safe_load(Path(source).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: cannot read {source}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(data, dict) or not data.get("model_list"):
        print(f"error: {source} has no model_list: is it a LiteLLM proxy config?", file=sys.stderr)
        return 2
    config, report = convert(data)
    text = (f"# Converted from the LiteLLM proxy config {Path(source).name} by `modelyard import litellm`.\n"
            f"# Check it with `modelyard models` and `modelyard doctor`.\n"
            + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    said = sys.stderr if output == "-" else sys.stdout
    if output == "-":
        print(text, end="")
    else:
        path = Path(output)
        if path.exists() and not force:
            print(f"error: {path} exists (--force overwrites it)", file=sys.stderr)
            return 1
        path.write_text(text)
        print(f"wrote {path}: {len(config['models'])} model(s), "
              f"{sum(len(m['deployments']) for m in config['models'])} deployment(s)", file=said)
    if report:
        print(f"\nNot carried over, or carried with a change ({len(report)}):", file=said)
        for line in report:
            print(f"  - {line}", file=said)
    else:
        print("Everything was carried over.", file=said)
    return 0
