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
BIAS_INIT = 0.0


def new_vae(seed: int = 0, base_dim: int = BASE_DIM) -> WanVAE:
    """A float32 Wan 2.1 VAE of width ``base_dim``, initialised as a per-frame autoencoder, trainable.

    The init makes the untrained network a 2-D autoencoder that keeps every 4th frame, which training
    then turns into a video autoencoder:

    * every 3x3x3 causal conv starts with only its current-frame tap (the two past taps zero), so it
      acts on each frame alone; the residual branches' second conv is scaled down so each block starts
      near the identity;
    * the encoder's stride-2 ``time_conv`` starts as "take the newest frame of the window" and the
      decoder's ``time_conv`` as "repeat the frame twice", so latent frame ``k`` starts as frame ``4k``
      and decodes to four copies of it;
    * the two middle attention blocks have their output projection zero and frozen (see
      :func:`trainable`): the network is then fully convolutional, so training on crops teaches it
      whole frames too (an attention block trained on 4x4 crops does not carry over to 8x8 frames).
    """
    vae = WanVAE(VAEConfig(version="2.1", base_dim=base_dim, dec_dim=base_dim, z_dim=Z_DIM))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.ones_like(p))
            elif name.endswith("proj.weight") or name.endswith("time_conv.bias"):
                p.zero_()
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * BIAS_INIT)
            elif name.endswith("time_conv.weight"):
                p.zero_()
                eye = torch.eye(p.shape[1])
                for half in range(p.shape[0] // p.shape[1]):
                    p[half * p.shape[1]:(half + 1) * p.shape[1], :, -1, 0, 0] = eye
            elif p.dim() == 5 and p.shape[2] == 3:
                p.zero_()
                gain = 0.3 if name.endswith("residual.6.weight") else 1.0
                fan_in = p.shape[1] * p.shape[3] * p.shape[4]
                p[:, :, -1] = torch.randn(p[:, :, -1].shape, generator=gen) * gain / math.sqrt(fan_in)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
    trainable(vae)
    return vae


def trainable(vae: WanVAE) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` on every parameter but the middle attention blocks'; return those parameters."""
    params = []
    for name, p in vae.named_parameters():
        p.requires_grad_(".middle.1." not in name)
        if p.requires_grad:
            params.append(p)
    return params


def encode_train(vae: WanVAE, video: torch.Tensor) -> torch.Tensor:
    """Differentiable encode: ``[B, 3, F, H, W]`` -> raw latent mean ``[B, 16, T, h, w]``.

    The whole clip in one call: the causal convs and the strided time convs give the same result as
    the inference path's chunks (``tests/test_toy.py`` checks it), at a fraction of the overhead.
    """
    return vae.conv1(vae.encoder(video, {}), {})[:, :Z_DIM]


def decode_train(vae: WanVAE, latent: torch.Tensor) -> torch.Tensor:
    """Differentiable decode: raw latent -> video ``[B, 3, F, H, W]`` (unclamped), the whole clip at once."""
    return vae.decoder(vae.conv2(latent, {}), {})


def batch(seeds: list[int], frames: int = data.FRAMES) -> torch.Tensor:
    return torch.cat([data.to_model_range(data.render(data.draw_clip(s)))[:, :, :frames] for s in seeds])


def shape_crops(seeds: list[int], crop: int, gen: torch.Generator) -> torch.Tensor:
    """Whole clips ``seeds`` cut to ``crop``-pixel squares (multiples of 8) around the shape's path."""
    out = []
    for s in seeds:
        clip = data.draw_clip(s)
        video = data.to_model_range(data.render(clip))
        cx, cy = clip.centre(data.FRAMES // 2)
        jitter = (torch.randint(-8, 9, (2,), generator=gen)).tolist()
        left = min(max(0, 8 * round((cx + jitter[0] - crop / 2) / 8)), data.WIDTH - crop)
        top = min(max(0, 8 * round((cy + jitter[1] - crop / 2) / 8)), data.HEIGHT - crop)
        out.append(video[..., top:top + crop, left:left + crop])
    return torch.cat(out)


def weighted_error(rec: torch.Tensor, video: torch.Tensor, shape_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, plain mse): squared error with the shape's pixels weighted ``1 + shape_weight``.

    The shape covers about 4 % of a frame, so plain MSE mostly teaches the background; the shape is
    what the experts and the score need.
    """
    err = (rec - video).square()
    background = video.flatten(2).median(dim=2).values[..., None, None, None]
    on_shape = ((video - background).abs().amax(dim=1, keepdim=True) > 0.2).float()
    weights = 1.0 + shape_weight * on_shape
    return (err * weights).mean() / weights.mean(), err.mean()


def train(steps: int, frames: int = data.FRAMES, batch_size: int = 4, crop: int = 32, lr: float = 1e-3,
          whole_every: int = 0,
          seed: int = 0, shape_weight: float = 2.0, vae: WanVAE | None = None, log=print,
          eval_every: int = 250, eval_seeds: list[int] | None = None,
          checkpoint=None) -> tuple[WanVAE, list[tuple[int, float]]]:
    """Fit the VAE on training clips cut to ``crop`` pixels around the shape; returns it and its curve.

    ``frames=1``: one random frame of each clip (the image stage: a per-frame autoencoder, cheap);
    ``frames=17``: whole clips (the video stage: the causal taps and time convs learn the motion).
    ``whole_every=n``: every n-th step takes whole 64x64 clips instead of the crops, so the network
    also sees plain background far from the shape and frame borders (crops alone leave smudges there).
    Keep ``batch_size`` >= 2: PyTorch's CPU backend sends batch-1 3-D convs this small to its slow
    reference kernel (about 10x slower here, measured).
    Adam, a 50-step warm-up then cosine decay to 2 % of ``lr``. The curve is ``[(step, mean pixel mse
    over the last eval_every steps)]``; every ``eval_every`` steps the PSNR on whole held-out clips
    (``eval_seeds``) is logged and the state dict saved to ``checkpoint`` (a path), if given.
    """
    if seed * 100_000 + steps * batch_size >= data.HELD_OUT_SEED:
        raise ValueError(f"seed {seed} with {steps} steps of {batch_size} clips reaches the held-out clips "
                         f"(seeds from {data.HELD_OUT_SEED}); use a smaller seed or fewer steps")
    torch.manual_seed(seed)
    vae = vae if vae is not None else new_vae(seed)
    vae.train()
    params = trainable(vae)
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 50) * (
        0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, i / steps)))))
    gen = torch.Generator().manual_seed(seed)
    curve, window, start = [], [], time.perf_counter()
    for step in range(steps):
        whole = whole_every and step % whole_every == whole_every - 1
        seeds = [seed * 100_000 + step * batch_size + i for i in range(batch_size)]
        video = batch(seeds) if whole else shape_crops(seeds, crop, gen)
        if frames < data.FRAMES:
            first = int(torch.randint(0, data.FRAMES - frames + 1, (1,), generator=gen))
            video = video[:, :, first:first + frames]
        loss, mse = weighted_error(decode_train(vae, encode_train(vae, video)), video, shape_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        window.append(mse.item())
        if (step + 1) % eval_every == 0 or step == steps - 1:
            curve.append((step + 1, sum(window) / len(window)))
            window = []
            held = f", held-out whole clips {mean_psnr(vae, eval_seeds):.2f} dB" if eval_seeds else ""
            log(f"vae ({frames} frames) step {step + 1} crop mse {curve[-1][1]:.5f} "
                f"({psnr_from_mse(curve[-1][1]):.2f} dB){held} {time.perf_counter() - start:.0f} s")
            if checkpoint is not None:
                torch.save(vae.state_dict(), checkpoint)
    vae.eval()
    return vae, curve


@torch.no_grad()
def mean_psnr(vae: WanVAE, seeds: list[int]) -> float:
    """Mean reconstruction PSNR (dB) on whole clips ``seeds`` through the differentiable path."""
    values = []
    for s in seeds:
        video = batch([s])
        values.append(psnr_from_mse(float((decode_train(vae, encode_train(vae, video)).clamp(-1, 1) - video)
                                          .square().mean())))
    return sum(values) / len(values)


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
