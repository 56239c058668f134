"""`modelyard import litellm`: LiteLLM proxy configs (shaped like LiteLLM's documented examples) become Modelyard
configs that load and build a catalog, with a report of everything not carried over."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.catalog import build_catalog
from modelyard.config import load_settings
from modelyard.ops.litellm import convert

from ..support.paths import FIXTURES, REPO
from ..support.processes import cli

LITELLM = FIXTURES / "litellm"
ENV = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_API_KEY_EU", "AZURE_API_KEY_CA", "GEMINI_API_KEY",
       "REDIS_HOST", "REDIS_PASSWORD", "LITELLM_MASTER_KEY", "DATABASE_URL"]


def _load(tmp: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], list[str], Any]:
    for var in ENV:
        monkeypatch.setenv(var, f"value-of-{var.lower()}")
    config, report = convert(yaml.safe_load((LITELLM / name).read_text()))
    path = tmp / "modelyard.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_settings(path, data_dir=tmp / "data")
    build_catalog(settings)  # every model and deployment is one Modelyard accepts
    return config, report, settings


def test_the_quick_start_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, report, settings = _load(tmp_path, "quick_start.yaml", monkeypatch)
    assert [m["id"] for m in config["models"]] == ["gpt-3.5-turbo", "claude-3-sonnet"]
    gpt, claude = settings.models
    assert (gpt.deployments[0].backend, gpt.deployments[0].base_url, gpt.deployments[0].model) == \
        ("openai", "https://api.openai.com/v1", "gpt-3.5-turbo")
    assert gpt.deployments[0].api_key == "value-of-openai_api_key"  # os.environ/NAME became ${NAME}
    assert config["models"][0]["deployments"][0]["api_key"] == "${OPENAI_API_KEY}"
    assert (claude.deployments[0].backend, claude.deployments[0].base_url) == ("anthropic", "https://api.anthropic.com/v1")
    assert settings.admin_key == "sk-1234"
    assert any("master_key was written into the config" in line for line in report)


def test_a_load_balanced_multi_provider_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, report, settings = _load(tmp_path, "load_balancing.yaml", monkeypatch)
    by = {m.id: m for m in settings.models}
    assert set(by) == {"gpt-4o", "vllm-models", "llama3", "gemini-flash", "text-embedding-3-small"}
    eu, ca, direct = by["gpt-4o"].deployments  # one model, three deployments
    assert eu.base_url == "https://my-endpoint-europe-berri-992.openai.azure.com/openai/v1"
    assert eu.headers == {"api-key": "value-of-azure_api_key_eu"} and eu.api_key is None and eu.model == "gpt-4o-eu"
    assert (eu.name, ca.name, ca.model) == ("azure-1", "azure-2", "gpt-4o-ca")
    assert direct.name == "openai-direct" and direct.weight == 2
    assert {d.timeout for d in by["gpt-4o"].deployments} == {30.0}  # router_settings.timeout
    vllm = by["vllm-models"].deployments[0]
    assert (vllm.base_url, vllm.model, vllm.max_concurrency) == ("http://0.0.0.0:4000/v1", "facebook/opt-125m", 8)
    assert by["llama3"].deployments[0].base_url == "http://localhost:11434/v1"
    gem = by["gemini-flash"].deployments[0]
    assert (gem.backend, gem.model, gem.timeout, gem.first_byte_timeout) == ("gemini", "gemini-1.5-flash", 30, 10)
    assert by["text-embedding-3-small"].type == "embedding"
    assert (settings.cooldown_seconds, settings.cooldown_failures) == (30, 3)
    assert settings.redis_url == "redis://:value-of-redis_password@value-of-redis_host:6379"
    assert settings.admin_key == "value-of-litellm_master_key"
    said = "\n".join(report)
    for expected in ("rpm 6 not carried", "tpm 100000 not carried", "Vertex AI", "provider 'bedrock'",
                     "model 'gemini-vertex': no deployment", "api_version 2024-08-01-preview dropped",
                     "num_retries 2 not carried", "routing_strategy usage-based-routing-v2",
                     "database_url not carried", "litellm_settings: drop_params, success_callback not carried",
                     "general_settings: alerting not carried", "model 'claude': no deployment"):
        assert expected in said, expected


def test_fallbacks_aliases_and_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, report, settings = _load(tmp_path, "fallbacks.yaml", monkeypatch)
    by = {m.id: m for m in settings.models}
    assert "zephyr-beta" not in by  # huggingface/ has no backend here: reported, not guessed
    assert by["gpt-3.5-turbo"].fallbacks == ["claude-3-haiku", "gpt-4"] and by["gpt-3.5-turbo"].aliases == ["gpt-4"]
    assert by["gpt-3.5-turbo-16k"].deployments[0].timeout == 10  # litellm_settings.request_timeout
    said = "\n".join(report)
    for expected in ("fallbacks: 'zephyr-beta' is not a model carried over", "context_window_fallbacks not carried",
                     "num_retries 3 not carried", "litellm_params temperature not carried",
                     "allowed_fails became cooldown_failures"):
        assert expected in said, expected


def test_the_command_writes_a_config_modelyard_serves(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}, "PYTHONPATH": str(REPO / "src"),
           **{var: "x" for var in ENV}}
    out = tmp_path / "modelyard.yaml"
    r = cli("import", "litellm", str(LITELLM / "load_balancing.yaml"), "-o", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert "5 model(s), 7 deployment(s)" in r.stdout and "Not carried over" in r.stdout
    assert cli("import", "litellm", str(LITELLM / "load_balancing.yaml"), "-o", str(out), env=env).returncode == 1
    listed = cli("models", "--config", str(out), "--data-dir", str(tmp_path / "d"), env=env)
    assert listed.returncode == 0, listed.stderr
    assert "gpt-4o" in listed.stdout and "azure" not in out.read_text().split("models:")[0]
