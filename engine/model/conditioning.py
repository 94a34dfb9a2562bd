"""Image conditioning as pure tensor logic (spec §3): I2V-A14B channel concat, TI2V-5B frame hold.

Everything here works on *normalised* latents (the model's space) unless a name says
``raw``. Two conventions meet here, and each function says which one it takes:

* the model's: a mask is **1 where the image is known** (I2V ``y`` mask channels);
  a "noise mask" is **1 where the sampler generates** and 0 where a latent is kept
  (TI2V ``mask2`` in the official code);
* ComfyUI's: ``concat_mask`` (WanImageToVideo) is **0 where the image is known**, and
  a LATENT's ``noise_mask`` (Wan22ImageToVideoLatent) is 0 where the latent is kept,
  i.e. the same as our noise mask.

I2V-A14B (§3.2): the DiT input is ``[x(16), mask(4), z_img(16)]`` along channels,
``y = [mask, z_img]`` constant over all steps and the same for both CFG passes.

TI2V-5B image-to-video (§3.3): frame 0 of the latent holds the encoded image. Its
tokens get timestep 0 (per-token timesteps ``[B, L]``), and after every solver step
the kept latent is written back: ``x = (1 - m) * z + m * x``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..errors import public
from .latents import normalize

I2V_MASK_CHANNELS = 4  # one per video frame folded into a latent frame (temporal stride 4)
PATCH = (1, 2, 2)  # DiT patch (t, h, w): one token per 1x2x2 latent cell


@public
class ConditioningError(ValueError):
    """Conditioning tensors that do not fit the latent; the message names both shapes."""


# ----------------------------------------------------------------------------- I2V


def official_i2v_mask(known_frames: Sequence[bool], latent_hw: tuple[int, int]) -> torch.Tensor:
    """The official I2V mask ``[1, 4, T, h, w]`` from per-video-frame flags (1 = known).

    The video has ``F = 4n + 1`` frames. Frame 0 is repeated three more times so the
    sequence has ``4T`` entries; then mask channel j of latent frame k is padded frame
    ``4k + j``. A single start image gives latent frame 0 all ones, the rest zeros.
    """
    flags = torch.as_tensor([float(bool(f)) for f in known_frames], dtype=torch.float32)
    frames = flags.numel()
    if frames < 1 or (frames - 1) % 4:
        raise ConditioningError(f"known_frames must have 4n+1 entries (one per video frame), got {frames}")
    padded = torch.cat([flags[:1].repeat(3), flags])  # [4T]
    per_latent = padded.view(-1, I2V_MASK_CHANNELS).transpose(0, 1)  # [4, T]
    h, w = latent_hw
    return per_latent[None, :, :, None, None].expand(1, I2V_MASK_CHANNELS, per_latent.shape[1], h, w).contiguous()


@dataclass(frozen=True)
class I2VConditioning:
    """I2V-A14B image conditioning: the start-image latent and its mask, model conventions.

    ``image_latent_raw``: raw VAE latent of ``[image, zeros...]`` ``[B|1, 16, T, h, w]``.
    ``mask``: ``[B|1, 4, T, h, w]`` (or 1 channel, repeated to 4), **1 where known**.
    """

    image_latent_raw: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def from_comfy(cls, concat_latent_image: torch.Tensor, concat_mask: Optional[torch.Tensor] = None) -> "I2VConditioning":
        """From ComfyUI's WanImageToVideo conditioning values (``concat_mask`` is 0 where known).

        As ComfyUI does: a missing mask means no frame is known; a mask with other than
        4 channels is averaged over channels before being inverted.
        """
        if concat_latent_image.ndim != 5:
            raise ConditioningError(
                f"concat_latent_image must be a video latent [B, 16, T, h, w], got shape {tuple(concat_latent_image.shape)}"
            )
        if concat_mask is None:
            b, _, t, h, w = concat_latent_image.shape
            return cls(concat_latent_image, torch.zeros(b, I2V_MASK_CHANNELS, t, h, w))
        if concat_mask.ndim != 5:
            raise ConditioningError(
                f"concat_mask must be [B, 1 or 4, T, h, w] (ComfyUI WanImageToVideo), got shape {tuple(concat_mask.shape)}"
            )
        if concat_mask.shape[1] != I2V_MASK_CHANNELS:
            concat_mask = concat_mask.float().mean(dim=1, keepdim=True)
        return cls(concat_latent_image, 1.0 - concat_mask.float())

    def y(self, latent_shape: Sequence[int], device=None) -> torch.Tensor:
        """``y = [mask(4), normalize(image)(16)]``, ``[B, 20, T, h, w]`` float32, for ``latent_shape``."""
        b, c, t, h, w = latent_shape
        image = self.image_latent_raw
        if image.shape[1] != 16 or tuple(image.shape[2:]) != (t, h, w):
            raise ConditioningError(
                f"I2V start-image latent has shape {tuple(image.shape)} but the latent is {tuple(latent_shape)}: "
                "they need 16 channels and the same frames, height and width. Build both with the same "
                "width/height/length (Wan22DuoI2VConditioning returns a matching latent)."
            )
        mask = self.mask.float()
        if mask.shape[1] == 1:
            mask = mask.expand(-1, I2V_MASK_CHANNELS, -1, -1, -1)
        if mask.shape[1] != I2V_MASK_CHANNELS or tuple(mask.shape[2:]) != (t, h, w):
            raise ConditioningError(
                f"I2V mask has shape {tuple(mask.shape)}; expected [B, 4, {t}, {h}, {w}] to match the latent"
            )
        image = _to_batch(normalize(image.float()), b, "I2V start-image latent")
        mask = _to_batch(mask, b, "I2V mask")
        return torch.cat([mask, image], dim=1).to(device=device)


# ---------------------------------------------------------------------------- TI2V


def noise_mask_for(noise_mask: torch.Tensor, latent_shape: Sequence[int]) -> torch.Tensor:
    """A LATENT ``noise_mask`` (1 = generate, 0 = keep) as ``[B|1, 1|C, T, h, w]`` float32.

    Accepts ComfyUI's video layout ``[B|1, 1, T, h, w]`` (Wan22ImageToVideoLatent), a
    per-channel ``[B|1, C, T, h, w]``, or one value per latent frame ``[T]``.
    """
    b, c, t, h, w = latent_shape
    mask = noise_mask.float()
    if mask.ndim == 1:
        if mask.numel() != t:
            raise ConditioningError(f"a per-frame noise_mask needs {t} values (one per latent frame), got {mask.numel()}")
        return mask.view(1, 1, t, 1, 1).expand(1, 1, t, h, w).contiguous()
    fits = (
        mask.ndim == 5
        and mask.shape[0] in (1, b)
        and mask.shape[1] in (1, c)
        and tuple(mask.shape[2:]) == (t, h, w)
    )
    if not fits:
        raise ConditioningError(
            f"noise_mask has shape {tuple(noise_mask.shape)} but the latent is {tuple(latent_shape)}; expected "
            f"[1 or {b}, 1, {t}, {h}, {w}] (one value per latent cell, 0 = keep) as Wan22ImageToVideoLatent makes"
        )
    return mask


def hold(x: torch.Tensor, kept: torch.Tensor, noise_mask: torch.Tensor) -> torch.Tensor:
    """``(1 - m) * kept + m * x``: write the kept latent back where the noise mask is 0."""
    return (1.0 - noise_mask) * kept + noise_mask * x


def token_timesteps(noise_mask: torch.Tensor, t: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-token timesteps ``[B, L]``: ``t`` scaled by the noise mask sampled once per 2x2 patch.

    Official rule (§3.3 step 5): take mask channel 0, every second latent pixel, flatten
    in (t, h, w) order; kept cells therefore get timestep 0.
    """
    per_token = noise_mask[:, 0, :: PATCH[0], :: PATCH[1], :: PATCH[2]].flatten(1)  # [B|1, L]
    per_token = per_token.to(device=t.device, dtype=t.dtype).expand(batch, -1)
    return per_token * t.reshape(-1, 1)


def _to_batch(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ConditioningError(f"{what} has batch {tensor.shape[0]} but the latent has batch {batch}; use 1 or {batch}")
