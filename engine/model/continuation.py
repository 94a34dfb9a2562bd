"""Latent-space continuation in the SVI 2.0 Pro layout (Stable Video Infinity LoRAs for I2V-A14B).

The SVI 2.0 Pro LoRAs were trained on an I2V conditioning ``y`` that differs from the plain I2V one.
In the model's (normalised) latent space, for a clip of ``T`` latent frames:

* latent frame 0 holds the **anchor**: the anchor image encoded alone (one image -> one latent frame);
* latent frames ``1 .. k`` hold the **last k latent frames of the previous clip**, copied from its
  latent (no decode and re-encode, so no VAE round trip can shift its colours);
* the remaining frames are **zeros** (of the normalised space, not the encoding of gray frames);
* the mask marks **latent frame 0 only** as known (all four mask channels); the motion frames are
  context, not frames to reproduce.

A first clip has no previous clip: anchor plus zeros. Facts from the layout KJNodes'
``WanImageToVideoSVIPro`` builds and the SVI authors' description of their pipeline; the code is ours.

The pack passes image conditioning between nodes in ComfyUI's convention (``concat_latent_image``
a *raw* VAE latent, ``concat_mask`` 0 where known), so :func:`svi_layout` returns the raw latent
whose normalisation is that layout: zeros of the normalised space are the per-channel latent mean
in raw space, exactly (``(0 / (1/std) + mean - mean) * (1/std) == 0``).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import public
from .conditioning import I2V_MASK_CHANNELS
from .latents import denormalize

MOTION_LATENTS_DEFAULT = 1  # the SVI authors' default (--num_motion_latent 1)


@public
class ContinuationError(ValueError):
    """Inputs that cannot make an SVI continuation layout; the message names the value and the fix."""


def check_video_latent(latent: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(latent, torch.Tensor) or latent.ndim != 5 or latent.shape[0] != 1 or latent.shape[1] != 16:
        shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
        raise ContinuationError(
            f"{name} must be one I2V-A14B video latent [1, 16, T, h, w] (Wan 2.1 VAE), got {shape}; continue one "
            "clip at a time")
    return latent


def svi_layout(anchor_raw: torch.Tensor, previous_raw: Optional[torch.Tensor], motion_latents: int,
               latent_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(concat_latent_image, concat_mask)`` of the SVI 2.0 Pro layout, in ComfyUI's convention.

    ``anchor_raw``: the raw latent of the anchor image encoded alone, ``[1, 16, 1, h, w]``.
    ``previous_raw``: the previous clip's raw latent ``[1, 16, Tp, h, w]`` (its LATENT ``samples``), or
    None for a first clip. ``motion_latents``: how many of its last latent frames to carry (k).
    Returns the raw ``[1, 16, T, h, w]`` latent and the ``[1, 4, T, h, w]`` mask (0 = known: frame 0).
    """
    check_video_latent(anchor_raw, "the anchor latent")
    if anchor_raw.shape[2] != 1:
        raise ContinuationError(f"the anchor is one image encoded alone (1 latent frame), got {anchor_raw.shape[2]}")
    if isinstance(motion_latents, bool) or not isinstance(motion_latents, int) or motion_latents < 0:
        raise ContinuationError(f"motion_latents must be a whole number >= 0, got {motion_latents!r}")
    if isinstance(latent_frames, bool) or not isinstance(latent_frames, int) or latent_frames < 1:
        raise ContinuationError(f"the clip needs at least one latent frame, got {latent_frames!r}")
    h, w = anchor_raw.shape[-2:]
    carried = 0
    if previous_raw is not None:
        check_video_latent(previous_raw, "previous_latent")
        if tuple(previous_raw.shape[-2:]) != (h, w):
            raise ContinuationError(
                f"previous_latent is {previous_raw.shape[-1] * 8}x{previous_raw.shape[-2] * 8} pixels but the new "
                f"clip is {w * 8}x{h * 8}; continue at the previous clip's width and height")
        if motion_latents > previous_raw.shape[2]:
            raise ContinuationError(
                f"motion_latents {motion_latents} is more than the previous clip's {previous_raw.shape[2]} latent "
                f"frames; use at most {previous_raw.shape[2]}")
        carried = motion_latents
    if previous_raw is not None and 1 + carried >= latent_frames:
        raise ContinuationError(
            f"the anchor and {carried} motion latent frame(s) fill all {latent_frames} latent frames of the clip "
            f"({(latent_frames - 1) * 4 + 1} frames), leaving none to generate; use a length of at least "
            f"{(carried + 1) * 4 + 1} frames or fewer motion_latents")
    # zeros of the normalised space, as a raw latent: the per-channel mean
    image = denormalize(torch.zeros(1, 16, latent_frames, h, w, dtype=torch.float32, device=anchor_raw.device))
    image[:, :, :1] = anchor_raw.float()
    if carried:
        image[:, :, 1:1 + carried] = previous_raw[:, :, previous_raw.shape[2] - carried:].to(image)
    mask = torch.ones(1, I2V_MASK_CHANNELS, latent_frames, h, w, dtype=torch.float32, device=image.device)
    mask[:, :, 0] = 0.0  # ComfyUI convention: 0 = known
    return image, mask


def svi_overlap(motion_latents: int, continues: bool) -> int:
    """Frames of the new clip to drop when joining it to the previous one.

    Latent frame 0 decodes to one frame (the anchor's slot), each motion latent frame to four frames
    that repeat the previous clip's last ones: ``1 + 4k``. A first clip (nothing to join) drops none.
    """
    return 1 + 4 * motion_latents if continues else 0
