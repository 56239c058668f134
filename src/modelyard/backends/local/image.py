"""diffusers runtime: text-to-image, image-to-image (edits with masks), and video made from image frames."""

from __future__ import annotations

import io
import os
import math
from typing import TYPE_CHECKING, Any

from ...catalog import Deployment
from ...errors import InvalidRequest
from ...types import Task
from ...protocols.openai.media import ImageEdit, ImageRequest, ImageResult, VideoRequest, VideoResult, parse_size
from .. import media_input
from .demo_pipeline import DEMO_NOTE, build_demo_pipeline
from .runtime import LocalRuntime, installed

if TYPE_CHECKING:  # numpy comes with the [local] extra; a base install imports this module without it
    import numpy as np


def png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes, param: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidRequest("The uploaded file is not an image we can read (PNG, JPEG or WebP).", param=param) from None
    if image.width * image.height > 4096 * 4096:
        raise InvalidRequest("The image is larger than 4096x4096.", param=param)
    return image


def encode_mp4(frames: list[np.ndarray], fps: int) -> bytes:
    """H.264 in MP4 (yuv420p, faststart) so every browser and player can show it."""
    import tempfile

    import av

    height, width = frames[0].shape[:2]
    # faststart rewrites the file to put the index first, which needs a real file rather than a buffer
    with tempfile.TemporaryDirectory(prefix="modelyard-mp4-") as tmp:
        path = f"{tmp}/out.mp4"
        with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as container:
            _write_frames(container, frames, fps, width, height)
        with open(path, "rb") as fh:
            return fh.read()


def _write_frames(container: Any, frames: list[np.ndarray], fps: int, width: int, height: int) -> None:
    import av

    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"crf": "23", "preset": "veryfast"}
    for rgb in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


DRIFT = 0.35  # how far each video keyframe moves from the last (image-to-image strength)


def i2i_steps(steps: int, strength: float) -> int:
    """Image-to-image runs int(steps * strength) denoising steps; none at all crashes the pipeline (a 500 for a
    client's `steps: 1`), so ask for enough that at least one runs."""
    if strength <= 0:
        return steps
    n = max(steps, math.ceil(1 / strength))
    return n if int(n * strength) >= 1 else n + 1  # diffusers rounds down; a float error must not make it 0


class DiffusersBackend(LocalRuntime):
    """A diffusers pipeline folder on disk; with `options.demo: true` the folder is built on first use."""

    tasks = frozenset({Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO})
    # a pipeline's scheduler keeps the current step in itself: two calls at once index past its end (IndexError)
    max_threads = 1

    def __init__(self, deployment: Deployment) -> None:
        opts = deployment.config.options
        self.demo = bool(opts.get("demo", False))
        self.default_size = str(opts.get("default_size", "512x512"))
        self.steps = int(opts.get("steps", 4 if self.demo else 25))
        self.guidance = float(opts.get("guidance_scale", 1.0 if self.demo else 7.0))
        self.keyframes_per_second = float(opts.get("keyframes_per_second", 2))
        super().__init__(deployment)

    def missing(self) -> str | None:
        if not installed("diffusers"):
            return "diffusers is not installed (pip install 'modelyard[local]')"
        if self.path is not None and (self.demo or (self.path / "model_index.json").is_file()):
            return None
        return f"no diffusers pipeline (model_index.json) at {self.path}"

    def describe(self) -> dict[str, Any]:
        return {"demo": True, "note": DEMO_NOTE} if self.demo else {}

    def _load(self) -> Any:
        import torch
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from disk; never reach for a hub
        if self.deployment.config.n_threads:
            torch.set_num_threads(self.deployment.config.n_threads)
        if self.demo:
            build_demo_pipeline(self.path)  # type: ignore[arg-type]
        t2i = AutoPipelineForText2Image.from_pretrained(str(self.path), local_files_only=True)  # float32 on CPU
        t2i.set_progress_bar_config(disable=True)
        i2i = AutoPipelineForImage2Image.from_pipe(t2i)
        i2i.set_progress_bar_config(disable=True)
        return t2i, i2i

    def _size(self, size: str | None, fallback: tuple[int, int] | None = None) -> tuple[int, int]:
        if size and size != "auto":
            return parse_size(size)
        return fallback or parse_size(self.default_size)

    @staticmethod
    def _generator(seed: int | None) -> Any:
        import numpy as np
        import torch

        return torch.Generator("cpu").manual_seed(seed if seed is not None else int.from_bytes(np.random.bytes(4), "little"))

    async def generate_image(self, req: ImageRequest, model: str) -> ImageResult:
        width, height = self._size(req.size)
        steps = req.steps or (self.steps * 2 if req.quality in ("hd", "high") else self.steps)
        async with self.admitted():
            t2i, _ = await self.model()

            def work() -> list[bytes]:
                out = t2i(prompt=req.prompt, negative_prompt=req.negative_prompt, width=width, height=height,
                          num_inference_steps=steps, guidance_scale=self.guidance, num_images_per_prompt=req.n,
                          generator=self._generator(req.seed))
                return [png_bytes(img) for img in out.images]

            images = await self.run(work)
        return ImageResult(images, revised_prompt=req.prompt)

    async def edit_image(self, req: ImageEdit, model: str) -> ImageResult:
        src = decode_image(req.image, "image").convert("RGB")
        mask = decode_image(req.mask, "mask") if req.mask is not None else None
        width, height = self._size(req.size, (max(64, src.width // 8 * 8), max(64, src.height // 8 * 8)))
        async with self.admitted():
            _, i2i = await self.model()

            def work() -> list[bytes]:
                from PIL import Image

                base = src.resize((width, height))
                out = i2i(prompt=req.prompt, image=base, strength=req.strength,
                          num_inference_steps=i2i_steps(req.steps or self.steps, req.strength),
                          guidance_scale=self.guidance, num_images_per_prompt=req.n, generator=self._generator(req.seed))
                results = []
                for img in out.images:
                    if mask is not None:
                        # OpenAI's convention: fully transparent mask pixels mark what to change
                        alpha = mask.convert("RGBA").resize((width, height)).getchannel("A")
                        keep = Image.eval(alpha, lambda a: 255 if a > 0 else 0)
                        img = Image.composite(base, img.convert("RGB"), keep)
                    results.append(png_bytes(img))
                return results

            images = await self.run(work)
        return ImageResult(images, revised_prompt=req.prompt)

    async def generate_video(self, req: VideoRequest, model: str) -> VideoResult:
        width, height = parse_size(req.size)
        frame_count = max(1, round(req.duration * req.fps))
        keys = max(2, math.ceil(req.duration * self.keyframes_per_second) + 1)
        start = None
        if req.image:
            start = decode_image(media_input.decode_base64_image(req.image, "image"), "image").convert("RGB")
        async with self.admitted():
            t2i, i2i = await self.model()

            def work() -> list[np.ndarray]:
                import numpy as np

                gen = self._generator(req.seed)
                first = start.resize((width, height)) if start is not None else t2i(
                    prompt=req.prompt, negative_prompt=req.negative_prompt, width=width, height=height,
                    num_inference_steps=req.steps or self.steps, guidance_scale=self.guidance, generator=gen).images[0]
                keyframes = [np.asarray(first.convert("RGB"), dtype=np.float32)]
                prev = first
                for _ in range(keys - 1):  # each keyframe drifts from the last: motion with continuity
                    prev = i2i(prompt=req.prompt, image=prev, strength=DRIFT,
                               num_inference_steps=i2i_steps(req.steps or self.steps, DRIFT),
                               guidance_scale=self.guidance, generator=gen).images[0]
                    keyframes.append(np.asarray(prev.convert("RGB"), dtype=np.float32))
                frames = []
                for f in range(frame_count):
                    pos = f / max(1, frame_count - 1) * (keys - 1)
                    i = min(int(pos), keys - 2)
                    t = pos - i
                    frames.append(((1 - t) * keyframes[i] + t * keyframes[i + 1]).clip(0, 255).astype(np.uint8))
                return frames

            frames = await self.run(work)
            data = await self.run(encode_mp4, frames, req.fps)
        return VideoResult(data=data, duration_seconds=frame_count / req.fps, width=width, height=height, fps=req.fps,
                           frames=frame_count)
