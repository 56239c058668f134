"""Request types for the non-chat tasks: embeddings, rerank, score, PII, moderation, audio, images, video."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .schema import Open

_SIZE_PATTERN = r"^(\d{2,4})x(\d{2,4})$"
_SIZE = re.compile(_SIZE_PATTERN)
# an image or video size's sides: what parse_size accepts, and what the catalog lists (via the fields' schema)
MIN_SIDE, MAX_SIDE, SIDE_STEP = 64, 2048, 8


def size_schema(auto: bool) -> dict[str, Any]:
    """The JSON schema a size field shows (documentation only: parse_size is what checks it)."""
    return {"pattern": f"^(auto|{_SIZE_PATTERN[1:-1]})$" if auto else _SIZE_PATTERN,
            "x-sides": {"min": MIN_SIDE, "max": MAX_SIDE, "multiple_of": SIDE_STEP}}


def _texts(v: Any, field_name: str, *, max_items: int) -> Any:
    items = [v] if isinstance(v, str) else v
    if isinstance(items, list):
        if not items:
            raise ValueError(f"'{field_name}' must not be empty")
        if len(items) > max_items:
            raise ValueError(f"'{field_name}' takes at most {max_items} items")
        for i, s in enumerate(items):
            if isinstance(s, str) and not s.strip():
                raise ValueError(f"'{field_name}[{i}]' is an empty string")
    return v


class EmbeddingRequest(Open):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any) -> Any:
        return _texts(v, "input", max_items=2048)

    @property
    def texts(self) -> list[str] | None:
        """The inputs as text, or None when the client sent token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(x, str) for x in self.input):
            return list(self.input)  # type: ignore[arg-type]
        return None


class RerankRequest(Open):
    model: str = Field(min_length=1)
    query: str = Field(min_length=1)
    documents: list[str | dict[str, Any]] = Field(min_length=1, max_length=1000)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False

    @field_validator("documents")
    @classmethod
    def _docs(cls, v: list[Any]) -> list[Any]:
        for i, d in enumerate(v):
            if isinstance(d, dict) and not isinstance(d.get("text"), str):
                raise ValueError(f"documents[{i}] must be a string or an object with 'text'")
        return v

    @property
    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d["text"] for d in self.documents]


class ScoreRequest(Open):
    """vLLM's score API: text_1 against text_2, one-to-one, one-to-many or pairwise."""

    model: str = Field(min_length=1)
    text_1: str | list[str]
    text_2: str | list[str]

    @model_validator(mode="after")
    def _shapes(self) -> ScoreRequest:
        _texts(self.text_1, "text_1", max_items=1000)
        _texts(self.text_2, "text_2", max_items=1000)
        if isinstance(self.text_1, list) and isinstance(self.text_2, list) and len(self.text_1) not in (1, len(self.text_2)):
            raise ValueError("text_1 must be one text or as many texts as text_2")
        return self

    def pairs(self) -> list[tuple[str, str]]:
        a = [self.text_1] if isinstance(self.text_1, str) else self.text_1
        b = [self.text_2] if isinstance(self.text_2, str) else self.text_2
        if len(a) == 1:
            a = a * len(b)
        return list(zip(a, b))


class PIIRequest(Open):
    model: str | None = None
    input: str | list[str]
    language: str = "en"
    entities: list[str] | None = None
    score_threshold: float = Field(default=0.4, ge=0, le=1)

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any) -> Any:
        return _texts(v, "input", max_items=256)

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class ModerationRequest(Open):
    model: str | None = None
    input: str | list[str] | list[dict[str, Any]]

    @property
    def texts(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input]
        out: list[str] = []
        for item in self.input:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict) and item.get("type") == "text":
                out.append(str(item.get("text", "")))
        return out


class SpeechRequest(Open):
    model: str = Field(min_length=1)
    input: str = Field(min_length=1, max_length=4096)
    voice: str | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    instructions: str | None = None


def parse_size(size: str, field_name: str = "size") -> tuple[int, int]:
    m = _SIZE.match(size)
    if not m:
        raise ValueError(f"'{field_name}' must look like 1024x768")
    w, h = int(m.group(1)), int(m.group(2))
    if w % SIDE_STEP or h % SIDE_STEP or not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise ValueError(f"'{field_name}' sides must be multiples of {SIDE_STEP} between {MIN_SIDE} and {MAX_SIDE}")
    return w, h


class ImageRequest(Open):
    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=4000)
    n: int = Field(default=1, ge=1, le=10)
    size: str = Field(default="auto", json_schema_extra=size_schema(auto=True))
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] = "auto"
    response_format: Literal["url", "b64_json"] = "url"
    style: str | None = None
    negative_prompt: str | None = Field(default=None, max_length=4000)
    seed: int | None = None
    steps: int | None = Field(default=None, ge=1, le=100)
    user: str | None = None

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        if v != "auto":
            parse_size(v)
        return v


@dataclass
class ImageEdit:
    """POST /v1/images/edits (multipart), after validation: the image and mask are the uploaded files' bytes, checked
    to be images; a local runtime decodes them, an upstream receives them as sent (no Pillow in a base install)."""

    model: str
    prompt: str
    image: bytes
    mask: bytes | None = None
    n: int = 1
    size: str = "auto"
    response_format: str = "url"
    seed: int | None = None
    strength: float = 0.75
    steps: int | None = None


class VideoRequest(Open):
    """The blocking video route: size, duration, fps."""

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=4000)
    size: str = Field(default="832x480", json_schema_extra=size_schema(auto=False))
    duration: float = Field(default=6, gt=0, le=30)
    fps: int = Field(default=16, ge=1, le=60)
    image: str | None = Field(default=None, description="a start frame, base64 or data URL (image-to-video)")
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = Field(default=None, ge=1, le=100)

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v


@dataclass
class AudioInput:
    """POST /v1/audio/transcriptions and /translations (multipart), after validation."""

    model: str
    data: bytes
    filename: str
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float = 0.0
    timestamp_granularities: list[str] = field(default_factory=lambda: ["segment"])


@dataclass
class ImageResult:
    """Generated images as PNG bytes, with the prompt the model actually used."""

    images: list[bytes]
    revised_prompt: str | None = None


@dataclass
class VideoResult:
    data: bytes
    duration_seconds: float
    width: int
    height: int
    fps: int
    frames: int


@dataclass
class AudioResult:
    data: bytes
    content_type: str
