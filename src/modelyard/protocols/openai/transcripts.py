"""Transcript renderings for OpenAI's response_format: json, text, srt, vtt, verbose_json."""

from __future__ import annotations

from typing import Any


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(segments: list[dict[str, Any]]) -> str:
    blocks = [f"{i}\n{_stamp(s['start'], ',')} --> {_stamp(s['end'], ',')}\n{s['text'].strip()}\n"
              for i, s in enumerate(segments, 1)]
    return "\n".join(blocks)


def to_vtt(segments: list[dict[str, Any]]) -> str:
    blocks = [f"{_stamp(s['start'], '.')} --> {_stamp(s['end'], '.')}\n{s['text'].strip()}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(result: dict[str, Any], response_format: str) -> tuple[Any, str]:
    """(body, media type); dict bodies are JSON."""
    if response_format == "text":
        return result["text"] + "\n", "text/plain; charset=utf-8"
    if response_format == "srt":
        return to_srt(result["segments"]), "application/x-subrip; charset=utf-8"
    if response_format == "vtt":
        return to_vtt(result["segments"]), "text/vtt; charset=utf-8"
    if response_format == "verbose_json":
        return result, "application/json"
    return {"text": result["text"]}, "application/json"
