"""Units: what a call consumed (or is estimated to consume), the quantity every price and usage row is kept in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Units:
    """What a call consumed (or is estimated to consume); the price table turns these into micro-dollars."""

    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    image_size: str | None = None
    image_quality: str | None = None
    video_seconds: float = 0.0
    video_resolution: str | None = None
    characters: int = 0
    audio_seconds: float = 0.0
    requests: int = 1
    mode: str | None = None  # a studio mode (t2i, i2v_pro, ...): priced from the studio table, not the model's
