"""Train the toy Wan 2.1 VAE: the engine's own ``WanVAE`` module, key names and all, fitted to the synthetic clips.

Why the engine's module: its encoder and decoder (``engine.model.vae``) are plain ``nn.Module``s whose
in-place ops only touch fresh tensors, so autograd runs through them unchanged (``tests/test_toy.py``
checks a gradient reaches every parameter). Training calls the same chunked, cached forward the
inference path uses (``encode_chunks`` / ``decode_chunks``: frame 0 alone, then 4-frame chunks; one
latent frame at a time on the way back), so the trained weights are used exactly as trained and the
saved file is loaded unchanged by ``Wan22DuoVAELoader`` and ComfyUI's ``VAELoader``.

The latent is the encoder's mean (the log-variance half is kept for the file layout and not trained).
A small penalty keeps the latent near the origin. After training, the mean's 1x1 conv (``conv1``) and the
decoder's input conv (``conv2``) are rescaled per channel, an exact reparametrisation, so the latents of
the training clips have Wan 2.1's published per-channel mean and std: the samplers normalise with that
table, and the experts then see unit-variance latents as the real ones do.
"""
from __future__ import annotations

import math
import time

import torch

from ..engine.model.latents import WAN21_MEAN, WAN21_STD
from ..engine.model.vae.model import VAEConfig, WanVAE, decode_chunks, encode_chunks
from . import data

BASE_DIM = 16
Z_DIM = 16


def new_vae(seed: int = 0, base_dim: int = BASE_DIM) -> WanVAE:
    """A float32 Wan 2.1 VAE of width ``base_dim`` with order-one initial activations, trainable."""
    vae = WanVAE(VAEConfig(version="2.1", base_dim=base_dim, dec_dim=base_dim, z_dim=Z_DIM))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.ones_like(p))
            elif name.endswith("bias"):
                p.zero_()
            else:
                gain = 0.5 if name.endswith(("residual.6.weight", "proj.weight")) else 1.0
                p.copy_(torch.randn(p.shape, generator=gen) * gain / math.sqrt(p[0].numel()))
    for p in vae.parameters():
        p.requires_grad_(True)
    return vae


def encode_train(vae: WanVAE, video: torch.Tensor) -> torch.Tensor:
    """Differentiable encode: ``[B, 3, F, H, W]`` -> raw latent mean ``[B, 16, T, h, w]``."""
    cache: dict = {}
    parts = [vae.conv1(vae.encoder(video[:, :, a:b], cache), cache)[:, :Z_DIM]
             for a, b in encode_chunks(video.shape[2])]
    return torch.cat(parts, dim=2)


def decode_train(vae: WanVAE, latent: torch.Tensor) -> torch.Tensor:
    """Differentiable decode: raw latent -> video ``[B, 3, F, H, W]`` (unclamped)."""
    cache: dict = {}
    parts = [vae.decoder(vae.conv2(latent[:, :, a:b], cache), cache) for a, b in decode_chunks(latent.shape[2])]
    return torch.cat(parts, dim=2)


def batch(seeds: list[int], frames: int) -> torch.Tensor:
    return torch.cat([data.to_model_range(data.render(data.draw_clip(s), frames=data.FRAMES)[:frames])
                      for s in seeds])


def train(steps: int = 1200, batch_size: int = 2, windows=((5, 32),), lr: float = 3e-4, seed: int = 0,
          vae: WanVAE | None = None, shape_weight: float = 0.0, centred: bool = False,
          log=print) -> tuple[WanVAE, list[tuple[int, float]]]:
    """Fit a VAE (a new one, or continue ``vae``); returns it and the curve [(step, pixel mse)].

    Step ``i`` trains on windows of ``windows[i % len(windows)] = (frames, crop)``: ``frames``
    consecutive frames starting anywhere in the clip, a ``crop``-pixel square at a multiple of 8.
    Small windows train fast; whole frames and long windows teach the middle attention the full grid
    and the causal caches the whole clip (both need it: 32-pixel, 5-frame training alone gives 37 dB
    on such windows but 12 dB on whole 17-frame clips). ``centred`` places the crop on the middle of
    the shape's path (else it cycles over the frame); ``shape_weight`` adds that multiple of the squared
    error on shape pixels to the loss (the shape is about 4 % of a frame, so plain MSE mostly teaches
    the background).
    """
    torch.manual_seed(seed)
    vae = vae if vae is not None else new_vae(seed)
    vae.train()
    for p in vae.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(vae.parameters(), lr=lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=min(0.5, max(0.05, 2 / steps)))
    curve, start = [], time.perf_counter()
    for step in range(steps):
        frames, crop = windows[step % len(windows)]
        # frame windows start anywhere in the clip so every phase of the motion is seen
        video = batch([seed * 100_000 + step * batch_size + i for i in range(batch_size)], data.FRAMES)
        first = (step * 7) % (data.FRAMES - frames + 1)
        top = 8 * ((step * 3) % (1 + (data.HEIGHT - crop) // 8))
        left = 8 * ((step * 5) % (1 + (data.WIDTH - crop) // 8))
        if centred:
            cx, cy = data.draw_clip(seed * 100_000 + step * batch_size).centre(first + frames // 2)
            left = min(max(0, 8 * round((cx - crop / 2) / 8)), data.WIDTH - crop)
            top = min(max(0, 8 * round((cy - crop / 2) / 8)), data.HEIGHT - crop)
        video = video[:, :, first:first + frames, top:top + crop, left:left + crop]
        z = encode_train(vae, video)
        rec = decode_train(vae, z)
        err = (rec - video).square()
        mse = err.mean()
        loss = mse + 1e-4 * z.square().mean()
        if shape_weight:
            background = video.median(dim=3, keepdim=True).values.median(dim=4, keepdim=True).values
            on_shape = ((video - background).abs().amax(dim=1, keepdim=True) > 0.2).float()
            loss = loss + shape_weight * (err * on_shape).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == steps - 1:
            curve.append((step, mse.item()))
            log(f"vae step {step} ({frames} frames, {crop} px) mse {mse.item():.5f} "
                f"psnr {psnr_from_mse(mse.item()):.2f} dB {time.perf_counter() - start:.0f} s")
    vae.eval()
    return vae, curve


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for a video in [-1, 1] (peak-to-peak 2)."""
    return 10 * math.log10(4.0 / max(mse, 1e-12))


@torch.no_grad()
def match_wan21_stats(vae: WanVAE, seeds: list[int]) -> None:
    """Rescale ``conv1``'s mean rows and ``conv2``'s input columns so latents have Wan 2.1's mean and std."""
    zs = torch.cat([vae.encode(batch([s], data.FRAMES)) for s in seeds])
    mean = zs.mean(dim=(0, 2, 3, 4))
    std = zs.std(dim=(0, 2, 3, 4)).clamp_min(1e-6)
    target_mean, target_std = torch.tensor(WAN21_MEAN), torch.tensor(WAN21_STD)
    a = target_std / std  # z' = a z + b
    b = target_mean - a * mean
    w1, b1 = vae.conv1.weight, vae.conv1.bias
    w1[:Z_DIM] *= a.view(-1, 1, 1, 1, 1)
    b1[:Z_DIM] = a * b1[:Z_DIM] + b
    # conv2(z) = W z + c with z = (z' - b) / a  ->  W' = W / a (per input column), c' = c - W' b
    w2, b2 = vae.conv2.weight, vae.conv2.bias
    w2 /= a.view(1, -1, 1, 1, 1)
    b2 -= (w2[:, :, 0, 0, 0] * b).sum(dim=1)
