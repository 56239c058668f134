"""Prices (model and studio tables, integer micro-dollars), call estimates, and the units a result consumed."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import PriceConfig, Settings, StudioPriceConfig
from ..errors import InvalidRequest
from ..types import RawJSON, RawSSE, Task
from .filter import filtered_text
from .units import Units

log = logging.getLogger(__name__)
MICROS_PER_DOLLAR = 1_000_000
DEFAULT_OUTPUT_ESTIMATE = 1024  # output tokens reserved for a chat that sets no max_tokens
# no model writes more than this in one call; a larger max_tokens is reserved as this (and settled on real usage)
MAX_OUTPUT_ESTIMATE = 1_000_000
IMAGE_TIER_SCALE = {"1k": 1.0, "2k": 1.25, "4k": 1.5}  # the seed's i2i_pro_plus steps, applied to every image mode
VIDEO_RES_SCALE = {"480p": 2 / 3, "720p": 1.0, "1080p": 1.5}


def micros(dollars: float) -> int:
    return int(round(dollars * MICROS_PER_DOLLAR))


def dollars(amount_micros: int) -> str:
    """Exact decimal dollars for an integer micro-dollar amount (no float rounding in what clients see)."""
    sign = "-" if amount_micros < 0 else ""
    whole, frac = divmod(abs(amount_micros), MICROS_PER_DOLLAR)
    text = f"{frac:06d}".rstrip("0")
    return f"{sign}{whole}.{text.ljust(2, '0')}"


def _image_modes(base_1k: dict[str, float]) -> dict[str, StudioPriceConfig]:
    return {mode: StudioPriceConfig(per_tier={t: round(p * s, 6) for t, s in IMAGE_TIER_SCALE.items()})
            for mode, p in base_1k.items()}


def _video_modes(base_720p: dict[str, float]) -> dict[str, StudioPriceConfig]:
    return {mode: StudioPriceConfig(per_resolution={r: round(p * s, 6) for r, s in VIDEO_RES_SCALE.items()}, seconds=5)
            for mode, p in base_720p.items()}


def default_studio_prices() -> dict[str, StudioPriceConfig]:
    """The studio's starting prices (seed 003); other tiers scale 1k x1 / 2k x1.25 / 4k x1.5, video by resolution
    (480p x2/3, 720p x1, 1080p x1.5) and linearly with duration."""
    table = _image_modes({"t2i": 0.05, "i2i": 0.05, "t2i_pro": 0.08, "i2i_pro": 0.15, "i2i_pro_plus": 0.20})
    table.update(_video_modes({"t2v": 0.75, "i2v": 0.75, "t2v_pro": 0.99, "i2v_pro": 0.99}))
    return table


def image_tier(size: str | None) -> str:
    """'1k'/'2k'/'4k' as given, or the tier a WxH size falls in (by its longer side)."""
    if not size:
        return "1k"
    size = size.lower()
    if size in IMAGE_TIER_SCALE:
        return size
    w, _, h = size.partition("x")
    try:
        side = max(int(w), int(h))
    except ValueError:
        return "1k"
    return "1k" if side <= 1536 else "2k" if side <= 2560 else "4k"


def video_resolution(size: str | None) -> str:
    """'720p' as given, or the resolution a WxH size is (by its shorter side)."""
    if not size:
        return "720p"
    if size.endswith("p"):
        return size
    w, _, h = size.partition("x")
    try:
        side = min(int(w), int(h))
    except ValueError:
        return "720p"
    return "480p" if side <= 540 else "720p" if side <= 800 else "1080p"


def _pick(table: float | dict[str, float], *keys: str | None) -> float:
    if not isinstance(table, dict):
        return table
    for key in keys:
        if key is not None and key in table:
            return table[key]
    return table.get("default", 0.0)


@dataclass(frozen=True)
class ModelPrice:
    config: PriceConfig

    def cost(self, u: Units) -> int:
        c = self.config
        total = (u.input_tokens * c.input_per_1m + u.output_tokens * c.output_per_1m  # $/1M tokens x tokens = micros
                 + MICROS_PER_DOLLAR * (u.requests * c.per_request + u.characters / 1000 * c.per_1k_characters
                                        + u.audio_seconds / 60 * c.per_audio_minute))
        if u.images:
            q = u.image_quality
            each = _pick(c.per_image, f"{u.image_size}/{q}" if u.image_size and q else None, u.image_size, q)
            total += MICROS_PER_DOLLAR * each * u.images
        if u.video_seconds:
            total += MICROS_PER_DOLLAR * _pick(c.per_video_second, u.video_resolution) * u.video_seconds
        return math.ceil(total - 1e-6)  # never round a charge down to free

    def public(self) -> dict[str, Any]:
        return self.config.model_dump(exclude_defaults=True)


class PriceBook:
    """Who pays what: model prices (config), the studio table, and which plans may call which model."""

    def __init__(self, settings: Settings) -> None:
        configured: dict[str, PriceConfig] = {m.id: m.price for m in settings.models if m.price is not None}
        configured.update(settings.prices)
        # a price of all zeros is the same as none: free, and the wallet is never touched
        self.models = {k: ModelPrice(v) for k, v in configured.items() if any(v.model_dump().values())}
        self.studio = {**default_studio_prices(), **settings.studio_prices}
        self.model_plans: dict[str, frozenset[str]] = {m.id: frozenset(m.plans) for m in settings.models if m.plans}
        self.model_plans.update({k: frozenset(v) for k, v in settings.model_plans.items()})

    def resolve(self, catalog: Any) -> None:
        """Key prices and plan restrictions by model id, so one written under an alias applies too."""
        for table in (self.models, self.model_plans):
            for name in list(table):
                model = catalog.find(name)
                if model is None:  # a worker may announce it later; keep it under the name given
                    log.warning("price or plan list for '%s', which no model has (yet)", name)
                elif model.id != name:
                    table.setdefault(model.id, table.pop(name))  # type: ignore[arg-type]

    def is_free(self, model_id: str, estimate: Units | None) -> bool:
        return model_id not in self.models and (estimate is None or estimate.mode is None)

    def cost(self, model_id: str, u: Units) -> int:
        if u.mode is not None:
            return self.studio_cost(u)
        price = self.models.get(model_id)
        return price.cost(u) if price is not None else 0

    def studio_cost(self, u: Units) -> int:
        table = self.studio.get(u.mode or "")
        if table is None:
            raise InvalidRequest(f"Unknown mode '{u.mode}'.", param="mode")
        if table.per_resolution:
            res = u.video_resolution or "720p"
            if res not in table.per_resolution:
                raise InvalidRequest(f"Mode '{u.mode}' has no price for resolution '{res}' "
                                     f"(priced: {', '.join(table.per_resolution)}).", param="resolution")
            seconds = u.video_seconds or table.seconds
            return math.ceil(MICROS_PER_DOLLAR * table.per_resolution[res] * seconds / table.seconds - 1e-6)
        tier = image_tier(u.image_size)
        if tier not in table.per_tier:
            raise InvalidRequest(f"Mode '{u.mode}' has no price for resolution '{tier}' "
                                 f"(priced: {', '.join(table.per_tier)}).", param="resolution")
        # the studio's table is per generation ("each generation deducts"): a t2i call's four images are one price
        return micros(table.per_tier[tier])


def price_list(book: PriceBook | None, catalog: Any) -> dict[str, Any]:
    """Every model with its price (free when none) and any plan restriction; the studio modes' table."""
    models = []
    for m in catalog:
        price = book.models.get(m.id) if book else None
        entry: dict[str, Any] = {"model_id": m.id, "type": m.type, "free": price is None}
        if price is not None:
            entry["price"] = price.public()
        plans = book.model_plans.get(m.id) if book else None
        if plans:
            entry["plans"] = sorted(plans)
        models.append(entry)
    studio: dict[str, Any] = {}
    for mode, t in (book.studio.items() if book else ()):
        if t.per_resolution:
            studio[mode] = {"per_resolution": {r: dollars(round(p * MICROS_PER_DOLLAR))
                                               for r, p in t.per_resolution.items()}, "seconds": t.seconds}
        else:
            studio[mode] = {"per_tier": {k: dollars(round(p * MICROS_PER_DOLLAR)) for k, p in t.per_tier.items()}}
    return {"currency": "usd", "models": models, "studio": studio}


def balance_body(balance_micros: int) -> dict[str, Any]:
    """A wallet balance as the APIs show it; cents round down: never show money the wallet does not hold."""
    return {"balance_cents": balance_micros // 10_000, "balance_dollars": f"{balance_micros // 10_000 / 100:.2f}",
            "balance_micros": balance_micros}


# ---------------------------------------------------------------- units: estimates before, real usage after

def chat_estimate(req: Any) -> Units:
    """An upper-bound guess, reserved before the call: ~1 token per 3 bytes of the request, and the output cap."""
    raw = getattr(req, "_raw", None)
    size = len(raw) if raw is not None else sum(len(str(m.content or "")) for m in req.messages)
    cap = getattr(req, "max_completion_tokens", None) or getattr(req, "max_tokens", None) or DEFAULT_OUTPUT_ESTIMATE
    return Units(input_tokens=size // 3 + 1, output_tokens=min(int(cap), MAX_OUTPUT_ESTIMATE))


def chat_units(usage: dict[str, Any] | None, fallback: Units | None, output_chunks: int = 0) -> Units | None:
    """Units from an OpenAI `usage` object; without one (a stream that did not ask for usage), the input estimate
    and one token per content chunk."""
    if usage:
        return Units(input_tokens=int(usage.get("prompt_tokens") or 0),
                     output_tokens=int(usage.get("completion_tokens") or 0))
    if fallback is None:
        return None
    return Units(input_tokens=fallback.input_tokens, output_tokens=output_chunks)


def token_units(usage: tuple[int, int] | None) -> Units | None:
    """Units from an (input, output) token count, as dialect stream encoders report it."""
    return Units(input_tokens=usage[0], output_tokens=usage[1]) if usage is not None else None


def chunk_events(chunk: Any) -> int:
    """How many stream events a chunk is: one, or as many as a relayed block of raw SSE holds."""
    return chunk.count(b"\n\n") if isinstance(chunk, RawSSE) else 1


def chunk_usage(chunk: Any) -> dict[str, Any] | None:
    """The usage a stream chunk carries, if any; raw upstream bytes are parsed only when they mention usage."""
    if isinstance(chunk, RawSSE):  # a block of whole events: the last one that reports usage wins
        if b'"usage"' not in chunk:
            return None
        for line in reversed(chunk.split(b"\n")):
            if line.startswith(b"data:") and b'"usage"' in line:
                found = chunk_usage(RawJSON(line[5:].strip()))
                if found:
                    return found
        return None
    if isinstance(chunk, RawJSON):
        if b'"usage"' not in chunk:
            return None
        try:
            return orjson.loads(memoryview(chunk)).get("usage")  # orjson refuses bytes subclasses; a view is free
        except (orjson.JSONDecodeError, AttributeError):
            return None
    if isinstance(chunk, dict):
        return chunk.get("usage")
    return None


def task_units(task: Task, req: Any, result: Any = None) -> Units:
    """Units of a non-chat task: from the request before the call, refined by the result after it."""
    u = Units()
    if task in (Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE):
        images = getattr(result, "images", None)
        u.images = len(images) if images is not None else int(getattr(req, "n", 1) or 1)
        size = getattr(req, "size", None)
        u.image_size = size if size and size != "auto" else None
        quality = getattr(req, "quality", None)
        u.image_quality = quality if quality and quality != "auto" else None
    elif task in (Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO):
        u.video_seconds = float(getattr(req, "duration", 0) or 0)
        u.video_resolution = video_resolution(getattr(req, "size", None))
    elif task == Task.SPEECH:
        u.characters = len(getattr(req, "input", "") or "")
    elif task in (Task.TRANSCRIPTION, Task.TRANSLATION):
        duration = getattr(result, "duration", None)
        if duration is None and isinstance(result, dict):
            duration = result.get("duration")
        u.audio_seconds = float(duration or 0)
    elif isinstance(result, dict) and isinstance(result.get("usage"), dict):
        u.input_tokens = int(result["usage"].get("prompt_tokens") or 0)
    elif result is None and task == Task.EMBEDDING:  # the estimate: ~1 token per 3 characters of text input
        text, _ = filtered_text(Task.EMBEDDING, req)
        u.input_tokens = len(text) // 3 + 1 if text else 0
    return u


def payload_estimate(task: Task, payload: dict[str, Any]) -> Units:
    """What a queued job is estimated to cost, from its payload (a dict): reserved at submit like a sync call."""
    if task in (Task.CHAT, Task.COMPLETION):
        cap = payload.get("max_completion_tokens") or payload.get("max_tokens")
        cap = cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else DEFAULT_OUTPUT_ESTIMATE
        size = len(json.dumps(payload, default=str))  # not orjson: a payload may hold integers past 64 bits
        return Units(input_tokens=size // 3 + 1, output_tokens=min(cap, MAX_OUTPUT_ESTIMATE))
    fields = {k: v for k, v in payload.items() if isinstance(k, str)}
    n = fields.get("n")
    fields["n"] = n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 16 else 1
    for key in ("size", "quality"):
        if not isinstance(fields.get(key), str):
            fields.pop(key, None)
    duration = fields.get("duration")
    fields["duration"] = float(duration) if isinstance(duration, (int, float)) and 0 < duration <= 3600 else 0
    return task_units(task, _Fields(fields))


class _Fields:
    """Attribute access over a job payload's keys, for the helpers that read validated requests."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)

    def __getattr__(self, name: str) -> Any:
        return None


def fill_units(real: Units, estimate: Units) -> Units:
    """A result's units, completed from the estimate where the result cannot say (an image's size tier, speech's
    characters, a video's resolution): the price table needs them."""
    for name in ("image_size", "image_quality", "video_resolution"):
        if not getattr(real, name):
            setattr(real, name, getattr(estimate, name))
    if not real.characters:
        real.characters = estimate.characters
    if not real.video_seconds:
        real.video_seconds = estimate.video_seconds
    return real
