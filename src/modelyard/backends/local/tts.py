"""Speech synthesis: Piper voices (ONNX) and the espeak-ng engine (many languages)."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

from ...catalog import Deployment
from ...errors import InvalidRequest, UpstreamError
from ...types import ModelState, Task
from ...protocols.openai.media import AudioResult, SpeechRequest
from . import audio
from .runtime import LocalRuntime, installed

# OpenAI SDK users send these; they mean "the default voice" on engines that have other names.
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
                           "verse", "marin", "cedar"})


def _check_voice(voice: str | None, voices: list[str], default: str) -> str:
    if voice is None or voice in OPENAI_VOICES or voice == default:
        return default
    if voice not in voices:
        shown = ", ".join(voices[:20]) + (" ..." if len(voices) > 20 else "")
        raise InvalidRequest(f"Unknown voice '{voice}'. This model's voices: {shown}.", param="voice")
    return voice


class PiperBackend(LocalRuntime):
    """A Piper .onnx voice (with its .onnx.json beside it). piper-tts is GPL-3.0: installed only by the [piper] extra."""

    tasks = frozenset({Task.SPEECH})

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        self.voice_name = str(deployment.config.options.get("voice") or (self.path.name.split(".")[0] if self.path else "default"))

    def missing(self) -> str | None:
        if not installed("piper"):
            return "piper-tts is not installed (pip install 'modelyard[piper]'; it is GPL-3.0)"
        if self.path is None or not self.path.is_file():
            return f"Piper voice not found at {self.path}"
        return None

    def _load(self) -> Any:
        from piper import PiperVoice

        return PiperVoice.load(str(self.path))

    def voices(self) -> list[str]:
        return [self.voice_name]

    async def list_voices(self) -> list[str]:
        return self.voices()

    def describe(self) -> dict[str, Any]:
        return {"engine": "piper", "voices": self.voices(), "default_voice": self.voice_name, "license": "GPL-3.0"}

    async def speech(self, req: SpeechRequest, model: str) -> AudioResult:
        _check_voice(req.voice, self.voices(), self.voice_name)
        async with self.admitted():
            voice = await self.model()

            def work() -> bytes:
                import numpy as np
                from piper import SynthesisConfig

                cfg = SynthesisConfig(length_scale=1.0 / req.speed)
                chunks = [c.audio_int16_array for c in voice.synthesize(req.input, syn_config=cfg)]
                samples = np.concatenate(chunks) if chunks else np.zeros(1, dtype=np.int16)
                return audio.encode(samples, voice.config.sample_rate, req.response_format)

            data = await self.run(work)
        return AudioResult(data, audio.CONTENT_TYPES[req.response_format])


class EspeakBackend(LocalRuntime):
    """The espeak-ng program (Debian package `espeak-ng`): robotic, but over a hundred languages."""

    tasks = frozenset({Task.SPEECH})
    DEFAULT_VOICE = "en-us"

    def __init__(self, deployment: Deployment) -> None:
        self.binary = deployment.config.path or shutil.which("espeak-ng")
        super().__init__(deployment)
        self.default_voice = str(deployment.config.options.get("voice", self.DEFAULT_VOICE))
        self._voices: list[str] | None = None

    def missing(self) -> str | None:
        if not (self.binary and Path(self.binary).exists()):
            return "the espeak-ng program is not installed (apt-get install espeak-ng)"
        if not (installed("numpy") and installed("av")):  # its WAV is re-encoded with numpy and PyAV
            return "numpy and av are not installed (pip install 'modelyard[local]')"
        return None

    def _load(self) -> list[str]:
        import subprocess

        out = subprocess.run([self.binary, "--voices"], capture_output=True, text=True, timeout=30).stdout  # type: ignore[list-item]
        voices = [line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 3]
        self._voices = sorted(set(voices))
        return self._voices

    def voices(self) -> list[str]:
        return self._voices or [self.default_voice]

    async def list_voices(self) -> list[str]:
        """espeak-ng lists its voices when 'loaded' (one quick subprocess)."""
        return await self.model() if self.available() else []

    def describe(self) -> dict[str, Any]:
        return {"engine": "espeak-ng", "voices": self.voices(), "default_voice": self.default_voice}

    async def speech(self, req: SpeechRequest, model: str) -> AudioResult:
        async with self.admitted():
            voices = await self.model()
            voice = _check_voice(req.voice, voices, self.default_voice)
            if not re.fullmatch(r"[A-Za-z0-9_+\-]+", voice):
                raise InvalidRequest(f"Unknown voice '{voice}'.", param="voice")
            wpm = str(max(80, min(500, int(175 * req.speed))))
            proc = await asyncio.create_subprocess_exec(
                self.binary, "--stdout", "-v", voice, "-s", wpm,  # type: ignore[arg-type]
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            wav, err = await proc.communicate(req.input.encode())  # text on stdin: never parsed as options
            if proc.returncode != 0 or not wav:
                raise UpstreamError(f"espeak-ng failed: {err.decode(errors='replace')[:200]}")
            samples, rate = audio.wav_to_samples(wav)
            data = await self.run(audio.encode, samples, rate, req.response_format)
        return AudioResult(data, audio.CONTENT_TYPES[req.response_format])

    async def status(self) -> ModelState:
        return ModelState.ONLINE if self.available() else ModelState.OFFLINE
