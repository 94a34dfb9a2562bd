"""Sample the toy through the pack's own nodes, as ComfyUI would call them, and score the result.

``generate`` loads the toy files with ``Wan22DuoExpertLoader`` and ``Wan22DuoVAELoader``, makes the toy
text contexts, runs ``Wan22DuoSampler`` (both experts, the switch rule) and ``Wan22DuoVAEDecode``, and
returns the IMAGE frames ``[F, H, W, 3]``. The demo and ``bench/quality.py`` use it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from . import data, text
from .build import FILES, WEIGHTS

DEFAULT_CAPTION = "a red disc moves right over a gray background"


def weight_path(name: str, folder: Optional[Path] = None) -> Path:
    path = (folder or WEIGHTS) / FILES[name]
    if not path.exists():
        raise FileNotFoundError(f"toy weights {path} are missing; they are committed in toy/weights/ "
                                "(or run `python scripts/train_toy.py` to train them again)")
    return path


def load(high: Optional[str] = None, low: Optional[str] = None, vae: Optional[str] = None,
         compute_dtype: str = "fp32") -> dict:
    """The two experts and the VAE, loaded by the pack's loader nodes (paths default to the committed toy)."""
    from ..nodes.loaders import Wan22DuoExpertLoader, Wan22DuoVAELoader

    high = high or str(weight_path("t2v_high"))
    low = low or str(weight_path("t2v_low"))
    vae = vae or str(weight_path("vae"))
    (high_model,) = Wan22DuoExpertLoader().load(high, "high_noise", "default", compute_dtype, "cpu")
    (low_model,) = Wan22DuoExpertLoader().load(low, "low_noise", "default", compute_dtype, "cpu")
    (vae_model,) = Wan22DuoVAELoader().load(vae, "fp32", "cpu")["result"]
    return {"high": high_model, "low": low_model, "vae": vae_model}


def generate(models: dict, caption: str = DEFAULT_CAPTION, seed: int = 0, steps: int = 20,
             sampler: str = "unipc", boundary: float = -1.0, cfg_high: float = 4.0, cfg_low: float = 3.0,
             swap_experts: bool = False, width: int = data.WIDTH, height: int = data.HEIGHT,
             frames: int = data.FRAMES) -> tuple[torch.Tensor, int]:
    """Sample one toy video; returns IMAGE ``[F, H, W, 3]`` in [0, 1] and the sampler's switch step."""
    from ..nodes.samplers import Wan22DuoEmptyLatent, Wan22DuoSampler
    from ..nodes.vae import Wan22DuoVAEDecode

    high, low = (models["low"], models["high"]) if swap_experts else (models["high"], models["low"])
    (latent,) = Wan22DuoEmptyLatent().generate(width, height, frames, 1)
    out = Wan22DuoSampler().sample(high, text.conditioning(caption), text.conditioning(""), latent, seed,
                                   steps=steps, cfg_high=cfg_high, cfg_low=cfg_low, boundary=boundary,
                                   sampler=sampler, low_noise_model=low)
    sampled, switch_step = out["result"]
    (images,) = Wan22DuoVAEDecode().decode(models["vae"], sampled, 0, 64)
    return images, switch_step
