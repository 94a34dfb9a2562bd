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


def first_frame(seed: int) -> torch.Tensor:
    """Frame 0 of clip ``seed`` as an IMAGE ``[1, H, W, 3]`` in [0, 1] (an I2V start image)."""
    return data.render(data.draw_clip(seed))[:1].float() / 255.0


def start_frame_for(caption: str, seed: int = 0) -> torch.Tensor:
    """An I2V start image for ``caption``: the toy's renderer draws its shape at a start of ``seed``."""
    words = caption.lower().split()
    for choice in data.all_captions():
        clip = data.clip_for(*choice, seed=seed)
        if clip.caption.split() == words:
            return data.render(clip)[:1].float() / 255.0
    raise ValueError(f"caption {caption!r} is outside the toy's vocabulary: it reads 'a <colour> <shape> moves "
                     f"<direction> over a <background> background' with colour {'/'.join(data.COLOURS)}, shape "
                     f"{'/'.join(data.SHAPES)}, direction {'/'.join(data.DIRECTIONS)}, background "
                     f"{'/'.join(data.BACKGROUNDS)}")


HELD_OUT_STRIDE = 5  # held-out clip i is seed HELD_OUT_SEED + 5 i (every bench and test uses the same clips)


def held_out(clips: int) -> tuple[list[int], list[str]]:
    """The seeds and captions of the first ``clips`` held-out evaluation clips."""
    seeds = [data.HELD_OUT_SEED + HELD_OUT_STRIDE * i for i in range(clips)]
    return seeds, [data.draw_clip(s).caption for s in seeds]


def held_out_inputs(task: str, clips: int, vae) -> list[tuple[int, str, list, list, dict]]:
    """Per held-out clip ``(seed, caption, positive, negative, latent)`` as the pack's nodes make them.

    T2V: the toy text conditioning and ``Wan22DuoEmptyLatent``'s empty latent. I2V: the same text
    through ``Wan22DuoI2VConditioning`` with the clip's first frame as start image (``vae`` encodes it),
    which also returns the latent. The CONDITIONING lists carry the I2V channels for the samplers.
    """
    from ..nodes.samplers import Wan22DuoEmptyLatent, Wan22DuoI2VConditioning

    if task not in ("t2v", "i2v"):
        raise ValueError(f"task {task!r}: the toy has 't2v' and 'i2v' experts")
    out = []
    for seed, caption in zip(*held_out(clips)):
        positive, negative = text.conditioning(caption), text.conditioning("")
        if task == "i2v":
            positive, negative, latent = Wan22DuoI2VConditioning().encode(
                positive, negative, vae, first_frame(seed), data.WIDTH, data.HEIGHT, data.FRAMES)
        else:
            (latent,) = Wan22DuoEmptyLatent().generate(data.WIDTH, data.HEIGHT, data.FRAMES, 1)
        out.append((seed, caption, positive, negative, latent))
    return out


def weight_path(name: str, folder: Optional[Path] = None) -> Path:
    path = Path(folder or WEIGHTS).resolve() / FILES[name]  # the loaders take absolute paths outside ComfyUI
    if not path.exists():
        raise FileNotFoundError(f"toy weights {path} are missing: the trained toy files are committed in toy/weights "
                                "(restore them with `git checkout -- toy/weights`), or train them again with "
                                "`python scripts/train_toy.py`")
    return path


def load(folder: Optional[Path] = None, compute_dtype: str = "fp32", task: str = "t2v",
         swap_experts: bool = False) -> dict:
    """The two experts of ``task`` ("t2v" or "i2v") and the VAE, loaded by the pack's loader nodes.

    ``folder`` defaults to ``toy/weights``. ``swap_experts`` loads the low-noise file in the
    high-noise role and the reverse, a deliberately broken run for the score to catch: the loaders
    refuse a file whose name says the other role, and the sampler refuses plainly swapped
    connections, so the two files are copied under neutral names (into a temporary folder that lives
    as long as the process: the experts load their weights when they first run) and given roles.
    """
    from ..nodes.loaders import Wan22DuoExpertLoader, Wan22DuoVAELoader

    high = str(weight_path(f"{task}_high", folder))
    low = str(weight_path(f"{task}_low", folder))
    vae = str(weight_path("vae", folder))
    if swap_experts:
        high, low = _neutral_copies(low, high)
    (high_model,) = Wan22DuoExpertLoader().load(high, "high_noise", "default", compute_dtype, "cpu")
    (low_model,) = Wan22DuoExpertLoader().load(low, "low_noise", "default", compute_dtype, "cpu")
    (vae_model,) = Wan22DuoVAELoader().load(vae, "fp32", "cpu")["result"]
    return {"high": high_model, "low": low_model, "vae": vae_model, "task": task}


def _neutral_copies(*paths: str) -> list[str]:
    """Copies of ``paths`` whose names say no expert role (``toy_expert_1.safetensors``, ...)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="toy_swapped_"))
    return [str(shutil.copyfile(p, folder / f"toy_expert_{n}.safetensors")) for n, p in enumerate(paths, 1)]


def generate(models: dict, caption: str = DEFAULT_CAPTION, seed: int = 0, steps: int = 20,
             sampler: str = "unipc", boundary: float = -1.0, cfg_high: float = 4.0, cfg_low: float = 3.0,
             width: int = data.WIDTH, height: int = data.HEIGHT,
             frames: int = data.FRAMES, start_image: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, int]:
    """Sample one toy video; returns IMAGE ``[F, H, W, 3]`` in [0, 1] and the sampler's switch step.

    I2V models (``load(task="i2v")``) start from ``start_image`` at shift 5 (official I2V-A14B); cfg
    defaults are T2V's official 4.0 / 3.0 (pass 3.5 / 3.5 for I2V's).
    """
    from ..nodes.samplers import Wan22DuoEmptyLatent, Wan22DuoSampler
    from ..nodes.vae import Wan22DuoVAEDecode

    high, low = models["high"], models["low"]
    positive, negative = text.conditioning(caption), text.conditioning("")
    shift = 12.0
    if models.get("task") == "i2v":
        from ..nodes.samplers import Wan22DuoI2VConditioning

        if start_image is None:
            raise ValueError("the I2V toy needs start_image (IMAGE [1, H, W, 3]); see first_frame()")
        positive, negative, latent = Wan22DuoI2VConditioning().encode(positive, negative, models["vae"],
                                                                      start_image, width, height, frames)
        shift = 5.0
    else:
        (latent,) = Wan22DuoEmptyLatent().generate(width, height, frames, 1)
    out = Wan22DuoSampler().sample(high, positive, negative, latent, seed, steps=steps, cfg_high=cfg_high,
                                   cfg_low=cfg_low, shift=shift, boundary=boundary, sampler=sampler,
                                   low_noise_model=low)
    sampled, switch_step = out["result"]
    (images,) = Wan22DuoVAEDecode().decode(models["vae"], sampled, 0, 64)
    return images, switch_step
