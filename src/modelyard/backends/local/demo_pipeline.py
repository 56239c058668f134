"""Builds the out-of-the-box demo image model: a tiny Stable Diffusion pipeline with RANDOM weights.

No real image weights ship in any package, so this exists to exercise the real diffusers code path end to end
(text encoder, UNet denoising, VAE decode, saving and loading with from_pretrained). Its pictures are noise-like
patterns. It is labelled as a demo in /v1/models; point a model at a real diffusers folder for real images.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

DEMO_NOTE = "DEMO: tiny random-weight diffusers pipeline built locally; outputs are noise-like patterns, not art."


def _bytes_to_unicode() -> dict[int, str]:
    # the byte-level alphabet CLIP's BPE tokenizer works over
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _write_tokenizer(folder: Path) -> None:
    """A character-level CLIP tokenizer (no merges): enough to turn any prompt into ids."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def build_demo_pipeline(target: Path, seed: int = 0) -> Path:
    """Create the pipeline folder once (atomically); later calls return at once."""
    if (target / "model_index.json").is_file():
        return target
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _write_tokenizer(tmp / "tok")
    tokenizer = CLIPTokenizer(str(tmp / "tok" / "vocab.json"), str(tmp / "tok" / "merges.txt"), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id, projection_dim=32))
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 32, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
        sample_size=256)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=EulerDiscreteScheduler(steps_offset=1), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(tmp))
    shutil.rmtree(tmp / "tok")
    (tmp / "MODELYARD_DEMO.txt").write_text(DEMO_NOTE + "\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
