"""Train the toy experts with the engine's own ``WanModel`` modules (dim 128, 4 layers, real key names).

Why the engine's module: the experts must load unchanged through ``Wan22DuoExpertLoader`` and ComfyUI's
``UNETLoader``, so the parameters are a ``WanModel``'s own, under the checkpoint names. Its casting layers
(``CastLinear``, ``CastConv3d``), norms, attention, RoPE and embeddings are differentiable once the
parameters are float32 with ``requires_grad``. ``WanBlock.forward`` and ``Head.forward`` are not: they
add into the residual stream in place (after LayerNorm saved it) to save inference memory, which autograd
rejects. :func:`velocity` is therefore the same forward written out of place: it calls the model's
submodules (patch and text/time embeddings, each block's attentions, FFN and norms, the head) and
repeats only the few lines of block/head arithmetic (modulate, gate, add). ``tests/test_toy.py`` checks
it equals ``WanModel.forward`` on the trained weights, so training and inference compute one function.
The one change of method: the 512-row zero-padded context is not materialised; the prompt rows and one
padding row are attended to with the padding row's multiplicity as a logit bias (:func:`embed_rows`),
the same value at a fraction of the cost.

Training is flow matching on normalised VAE latents: ``x_t = (1 - s) z + s e``, target ``e - z``, model
timestep ``1000 s``, with ``s`` drawn from the official shifted distribution (uniform ``u``,
``s = shift u / (1 + (shift - 1) u)``, shift 12 for T2V) restricted to one expert's side of the
boundary, as Wan 2.2 trains its experts. Captions are dropped 10 % of the time (zero context) for
classifier-free guidance.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from ..engine.model.dit import VARIANTS, WanConfig, WanModel, rope_tables
from . import text

DIM, FFN_DIM, LAYERS = 128, 512, 4
T2V_BOUNDARY, I2V_BOUNDARY = 0.875, 0.900
T2V_SHIFT, I2V_SHIFT = 12.0, 5.0


def new_model(variant: str = "t2v_a14b", seed: int = 0) -> WanModel:
    """A float32 ``WanModel`` of the toy size with trainable parameters.

    Init: weights ``N(0, 1/fan_in)``, biases 0, norm weights 1, modulations ``N(0, 1/dim)``, the output
    layer scaled by 0.1 so the first velocities are small.
    """
    in_dim, out_dim = next(dims for dims, name in VARIANTS.items() if name == variant)
    model = WanModel(WanConfig(dim=DIM, ffn_dim=FFN_DIM, num_layers=LAYERS, in_dim=in_dim, out_dim=out_dim))
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("modulation"):
            p.data = torch.randn(p.shape, generator=gen) / math.sqrt(DIM)
        elif "norm" in name and name.endswith("weight"):
            p.data = torch.ones(p.shape)
        elif name.endswith("bias"):
            p.data = torch.zeros(p.shape)
        else:
            p.data = torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel())
        p.requires_grad_(True)
    model.head.head.weight.data *= 0.1
    return model


def embed_rows(model: WanModel, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample prompt rows ``[n_i, 4096]`` -> embedded keys ``[B, n_max + 1, D]`` and a logit bias.

    The reference pads every context to 512 rows with zeros, and all padding rows embed to the same
    vector. Attending to ``512 - n`` equal keys is attending to one of them with ``log(512 - n)`` added
    to its logit, so the keys are the prompt rows (unused slots masked with -inf) and one padding row.
    """
    text_len, n_max = model.config.text_len, max(r.shape[0] for r in rows)
    padded = torch.zeros(len(rows), n_max + 1, text.TEXT_DIM)
    bias = torch.zeros(len(rows), n_max + 1)
    for i, r in enumerate(rows):
        padded[i, : r.shape[0]] = r
        bias[i, r.shape[0]: n_max] = float("-inf")
        bias[i, n_max] = math.log(text_len - r.shape[0])
    return model.text_embedding(padded), bias


def cross_attention(attn, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``CrossAttention.forward`` over the deduplicated keys of :func:`embed_rows` (same value)."""
    q = attn.heads(attn.norm_q(attn.q(x))).transpose(1, 2)
    k = attn.heads(attn.norm_k(attn.k(context))).transpose(1, 2)
    v = attn.heads(attn.v(context)).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None, None, :])
    return attn.o(out.transpose(1, 2).flatten(2))


def _modulate(u, shift, scale):
    return u * (1 + scale) + shift


def block_forward(block, x, e0, context, bias, freqs):
    """``WanBlock.forward`` for one timestep per sample, out of place (fp32 compute)."""
    m = block.modulation.unsqueeze(0) + e0  # [B, 1, 6, D]
    shift1, scale1, gate1, shift2, scale2, gate2 = m.unbind(2)
    x = x + block.self_attn(_modulate(block.norm1(x), shift1, scale1), freqs) * gate1
    x = x + cross_attention(block.cross_attn, block.norm3(x), context, bias)
    return x + block.ffn(_modulate(block.norm2(x), shift2, scale2)) * gate2


def velocity(model: WanModel, x: torch.Tensor, t: torch.Tensor, rows: list[torch.Tensor]) -> torch.Tensor:
    """The model's flow velocity for latents ``x [B, C, T, h, w]`` at timesteps ``t [B]``, differentiable."""
    b, _, frames, h, w = x.shape
    grid = (frames, h // 2, w // 2)
    tokens = model.patch_embedding(x).flatten(2).transpose(1, 2)
    e, e0 = model.time_embed(t.view(b, 1))
    context, bias = embed_rows(model, rows)
    freqs = rope_tables(grid, model.config.head_dim, x.device)
    for block in model.blocks:
        tokens = block_forward(block, tokens, e0, context, bias, freqs)
    head = model.head
    shift, scale = (head.modulation.unsqueeze(0) + e.unsqueeze(2)).unbind(2)
    out = head.head(_modulate(head.norm(tokens), shift, scale))
    return model.unpatchify(out, grid)


def sample_sigma(n: int, high: bool, boundary: float, shift: float, gen: torch.Generator) -> torch.Tensor:
    """Sigmas from the shifted distribution restricted to one side of ``boundary`` (inverse-CDF draw)."""
    u_boundary = boundary / (shift - (shift - 1) * boundary)  # shift_sigma(u_boundary) == boundary
    lo, hi = (u_boundary, 1.0) if high else (0.0, u_boundary)
    u = lo + (hi - lo) * torch.rand(n, generator=gen)
    return shift * u / (1 + (shift - 1) * u)


def train_expert(latents: torch.Tensor, rows: list[torch.Tensor], high: bool, variant: str = "t2v_a14b",
                 cond: torch.Tensor | None = None, steps: int = 1500, batch_size: int = 32, lr: float = 1e-3,
                 seed: int = 0, log=print) -> tuple[WanModel, list[tuple[int, float]]]:
    """Train one expert on normalised ``latents [N, 16, T, h, w]`` with caption ``rows`` (one per clip).

    ``cond`` (I2V): ``[N, 20, T, h, w]`` mask and image latent, concatenated after the noisy latent.
    Returns the model and its loss curve [(step, mean loss over the last 50 steps)].
    """
    torch.manual_seed(seed)
    boundary, shift = (T2V_BOUNDARY, T2V_SHIFT) if variant == "t2v_a14b" else (I2V_BOUNDARY, I2V_SHIFT)
    model = new_model(variant, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=min(0.5, max(0.05, 2 / steps)))
    gen = torch.Generator().manual_seed(seed)
    curve, window, start = [], [], time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(latents), (batch_size,), generator=gen)
        z = latents[idx]
        noise = torch.randn(z.shape, generator=gen)
        sigma = sample_sigma(batch_size, high, boundary, shift, gen)
        s = sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - s) * z + s * noise
        if cond is not None:
            x_t = torch.cat([x_t, cond[idx]], dim=1)
        drop = torch.rand(batch_size, generator=gen) < 0.1
        batch_rows = [rows[i][:0] if d else rows[i] for i, d in zip(idx.tolist(), drop.tolist())]
        pred = velocity(model, x_t, sigma * 1000, batch_rows)
        loss = F.mse_loss(pred, noise - z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        window.append(loss.item())
        if (step + 1) % 50 == 0:
            curve.append((step + 1, sum(window) / len(window)))
            window = []
            log(f"{'high' if high else 'low'} step {step + 1} loss {curve[-1][1]:.4f} {time.perf_counter() - start:.0f} s")
    for p in model.parameters():
        p.requires_grad_(False)
    return model, curve
