"""Wan 2.2 diffusion transformer (spec §1-2): one class for T2V-A14B, I2V-A14B and TI2V-5B.

Module and parameter names equal the checkpoint keys (``blocks.0.self_attn.q.weight``),
so a state dict loads by name (``engine.weights.checkpoint.load_dit``).

Numerics follow the reference (spec §2.8): the timestep sinusoid is float64, the time
embedding, time projection, modulation, LayerNorms, RMSNorm internals, the residual
stream and the head are float32, RoPE is applied in float64 (float32 when computing in
bf16/fp16), and every other Linear, the patch embedding and attention run in
``compute_dtype``. With ``compute_dtype=float32`` the result matches the reference run
in fp32 to about 1e-6 relative.

Memory: the timestep embedding is computed once per distinct group of tokens (the whole
sequence for a ``[B]`` timestep, one per latent frame when a ``[B, L]`` timestep is
constant within frames, as TI2V-5B's frame 0 at t=0 is) and broadcast, instead of being
expanded to ``[B, L, 6, D]``; the FFN runs over chunks of tokens; residual adds are in
place. The forward is for inference: call it under ``torch.no_grad()`` or
``torch.inference_mode()`` (nothing in it is meant to be differentiated).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from ..memory.estimates import ffn_chunk_tokens
from .ops import CastConv3d, CastLinear

HEAD_DIM = 128
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# (in_dim, out_dim) -> variant; the channel counts are what tells the three apart.
VARIANTS = {(16, 16): "t2v_a14b", (36, 16): "i2v_a14b", (48, 48): "ti2v_5b"}


@dataclass(frozen=True)
class WanConfig:
    """Architecture of one Wan 2.2 DiT, as read from a checkpoint's tensor shapes."""

    dim: int
    ffn_dim: int
    num_layers: int
    in_dim: int
    out_dim: int
    text_dim: int = 4096
    freq_dim: int = 256
    text_len: int = 512
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.dim % HEAD_DIM:
            raise ValueError(f"dim {self.dim} is not a multiple of the head dim {HEAD_DIM}")
        if (self.in_dim, self.out_dim) not in VARIANTS:
            known = ", ".join(f"in {i}/out {o} ({v})" for (i, o), v in VARIANTS.items())
            raise ValueError(f"in_dim {self.in_dim} / out_dim {self.out_dim} is not a Wan 2.2 model; expected {known}")
        if tuple(self.patch_size) != (1, 2, 2):
            raise ValueError(f"patch_size {tuple(self.patch_size)} is not Wan's (1, 2, 2)")

    @property
    def num_heads(self) -> int:
        return self.dim // HEAD_DIM

    @property
    def head_dim(self) -> int:
        return HEAD_DIM

    @property
    def variant(self) -> str:
        """ "t2v_a14b", "i2v_a14b" or "ti2v_5b" (from the channel counts)."""
        return VARIANTS[(self.in_dim, self.out_dim)]


# ---------------------------------------------------------------- embeddings


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``cat(cos(t*w), sin(t*w))`` with ``w_j = 10000^(-j/half)``, in float64 (spec §2.2)."""
    half = dim // 2
    t = t.to(torch.float64)
    omega = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = torch.outer(t, omega)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def rope_tables(grid: tuple[int, int, int], head_dim: int, device: torch.device,
                dtype: torch.dtype = torch.complex128) -> torch.Tensor:
    """``exp(i * angle)`` of the 3D RoPE for a (frames, h, w) token grid: ``[L, 1, head_dim/2]``.

    The head dim splits into frame / height / width parts of 44 / 42 / 42 (for 128);
    each part has its own frequencies ``1/10000^(2i/n)`` and integer positions from 0
    (spec §2.4). Angles are built in float64; ``dtype`` is complex128 or complex64.
    """
    hw = 2 * (head_dim // 6)
    parts = (head_dim - 2 * hw, hw, hw)
    angles = []
    for axis, (size, n) in enumerate(zip(grid, parts)):
        inv_freq = 1.0 / torch.pow(10000.0, torch.arange(0, n, 2, dtype=torch.float64, device=device) / n)
        a = torch.outer(torch.arange(size, dtype=torch.float64, device=device), inv_freq)
        shape = [1, 1, 1, n // 2]
        shape[axis] = size
        angles.append(a.view(shape).expand(*grid, n // 2))
    theta = torch.cat(angles, dim=-1).reshape(-1, 1, head_dim // 2)
    return torch.polar(torch.ones_like(theta), theta).to(dtype)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs ``x[2k] + i*x[2k+1]`` of ``x [B, L, N, d]`` by ``freqs``.

    A complex multiply, in float64 for complex128 tables as the reference does; the
    result stays in that real precision (the caller casts to its compute dtype). It
    works in place on ``x`` when ``x`` already has that precision: pass a temporary.
    """
    real = torch.float64 if freqs.dtype == torch.complex128 else torch.float32
    pairs = torch.view_as_complex(x.to(real).contiguous().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs.mul_(freqs)).flatten(-2)


# ---------------------------------------------------------------- layers


class LayerNorm32(nn.Module):
    """LayerNorm computed in float32 (optionally affine), returning float32."""

    def __init__(self, dim: int, eps: float, affine: bool = False) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False) if affine else None
        self.bias = nn.Parameter(torch.empty(dim), requires_grad=False) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), (self.dim,), w, b, self.eps)


class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps) * weight`` over all heads, computed and returned in float32.

    The reference rounds to the compute dtype before the weight multiply; with float32
    compute that is the same, with bf16/fp16 it differs by one rounding of that dtype.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (self.dim,), self.weight.float(), self.eps)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k = CastLinear(dim, dim), CastLinear(dim, dim)
        self.v, self.o = CastLinear(dim, dim), CastLinear(dim, dim)
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1))

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, attend: Callable = attention) -> torch.Tensor:
        """x: ``[B, L, D]`` in the compute dtype; q and k get RoPE, v does not.

        ``attend(q, k, v)`` is the attention over ``[B, L, N, d]`` (a sequence-parallel
        model passes one that first gathers the other ranks' tokens, see ``SequenceSplit``).
        """
        q = apply_rope(self.heads(self.norm_q(self.q(x))), freqs).to(x.dtype)
        k = apply_rope(self.heads(self.norm_k(self.k(x))), freqs).to(x.dtype)
        v = self.heads(self.v(x))
        return self.o(attend(q, k, v))


class CrossAttention(SelfAttention):
    """Attention from the video tokens to the embedded text; no RoPE, no mask."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.heads(self.norm_q(self.q(x)).to(x.dtype))
        k = self.heads(self.norm_k(self.k(context)).to(x.dtype))
        v = self.heads(self.v(context))
        return self.o(attention(q, k, v))


def token_chunks(length: int, groups: int, chunk: Optional[int]) -> Iterator[tuple[int, int, int, int]]:
    """Split ``length`` tokens into ranges ``(s, e, g0, g1)`` for per-group modulation.

    Tokens form ``groups`` equal consecutive groups sharing one modulation each. With
    one group a range may cut anywhere (``g0, g1 = 0, 1``, broadcast); otherwise ranges
    hold whole groups ``[g0, g1)``. ``chunk=None`` gives one range.
    """
    step = length if not chunk else chunk
    per_group = length // groups
    if groups > 1:
        step = per_group * max(1, step // per_group)
    for s in range(0, length, step):
        e = min(length, s + step)
        yield (s, e, 0, 1) if groups == 1 else (s, e, s // per_group, e // per_group)


def modulate(u: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``u * (1 + scale) + shift`` in float32, in place on the fresh ``u``."""
    return u.mul_(1 + scale).add_(shift)


def add_gated(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x += y * gate`` in float32, in place on the residual stream (inference only)."""
    return x.addcmul_(y, gate)


class WanBlock(nn.Module):
    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        dim, eps = cfg.dim, cfg.eps
        self.norm1 = LayerNorm32(dim, eps)
        self.self_attn = SelfAttention(dim, cfg.num_heads, eps)
        self.norm3 = LayerNorm32(dim, eps, affine=True)
        self.cross_attn = CrossAttention(dim, cfg.num_heads, eps)
        self.norm2 = LayerNorm32(dim, eps)
        self.ffn = nn.Sequential(CastLinear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 CastLinear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.empty(1, 6, dim), requires_grad=False)

    def forward(self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, freqs: torch.Tensor,
                dtype: torch.dtype, ffn_chunk: Optional[int], attend: Callable = attention) -> torch.Tensor:
        """x: float32 stream ``[B, L, D]``; e0: ``[B, G, 6, D]`` float32 per token group."""
        b, length, dim = x.shape
        groups = e0.shape[1]
        # [B, G, 6, 1, D]: chunk i is [B, G, 1, D], broadcasting over the tokens of a group.
        m = (self.modulation.float().unsqueeze(0) + e0).unsqueeze(3)
        shift1, scale1, gate1, shift2, scale2, gate2 = m.unbind(2)
        xg = x.view(b, groups, -1, dim)

        u = modulate(self.norm1(xg), shift1, scale1).to(dtype).view(b, length, dim)
        y = self.self_attn(u, freqs, attend).view(b, groups, -1, dim)
        x = add_gated(xg, y, gate1).view(b, length, dim)

        x = x.add_(self.cross_attn(self.norm3(x).to(dtype), context))

        # The FFN is token-wise: running it over chunks bounds its [tokens, ffn_dim]
        # intermediates; each chunk's result is added into the stream in place.
        for s, e, g0, g1 in token_chunks(length, groups, ffn_chunk):
            xs = x[:, s:e].view(b, g1 - g0, -1, dim)
            u = modulate(self.norm2(xs), shift2[:, g0:g1], scale2[:, g0:g1]).to(dtype)
            add_gated(xs, self.ffn(u), gate2[:, g0:g1])
        return x


class Head(nn.Module):
    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        self.norm = LayerNorm32(cfg.dim, cfg.eps)
        self.head = CastLinear(cfg.dim, cfg.out_dim * 4)
        self.modulation = nn.Parameter(torch.empty(1, 2, cfg.dim), requires_grad=False)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Float32 throughout (spec §2.6); e is the pre-projection ``[B, G, D]`` time embedding."""
        b, length, dim = x.shape
        shift, scale = (self.modulation.float().unsqueeze(0) + e.unsqueeze(2)).unsqueeze(3).unbind(2)
        u = modulate(self.norm(x.view(b, e.shape[1], -1, dim)), shift, scale).view(b, length, dim)
        return self.head(u)


# ---------------------------------------------------------------- model


class SequenceSplit(Protocol):
    """How one process of a sequence-parallel group holds its share of the tokens.

    ``engine.parallel.sequence`` implements it (Ulysses all-to-all over heads); the model
    is told to use one through ``forward(..., sequence=...)`` and never imports it.
    """

    def split(self, x: torch.Tensor, e: torch.Tensor, e0: torch.Tensor,
              freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's tokens, time embeddings and RoPE rows (see ``WanModel.forward``)."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Self-attention of the local queries over every rank's keys: ``[B, L_local, N*d]``."""

    def gather(self, out: torch.Tensor) -> torch.Tensor:
        """The head output ``[B, L_local, C]`` of every rank, as ``[B, L, C]`` in token order."""


class WanModel(nn.Module):
    """The Wan 2.2 DiT. ``forward(x, t, context)`` returns the float32 flow velocity.

    ``compute_dtype`` (float32, bfloat16 or float16) is the dtype of the matmuls and
    attention outside the fp32 regions; weights may be stored in any dtype (see
    ``engine.model.ops``). ``ffn_chunk`` is the number of tokens per FFN call: None picks
    enough that the FFN's hidden activations are no larger than the residual stream
    (at least 512 tokens), 0 disables chunking.
    """

    pads_context = True  # contexts shorter than text_len are padded with zero rows (guidance may batch them)

    def __init__(self, config: WanConfig, compute_dtype: torch.dtype = torch.float32,
                 ffn_chunk: Optional[int] = None) -> None:
        super().__init__()
        self.config = config
        self.compute_dtype = compute_dtype
        self.ffn_chunk = ffn_chunk
        c = config
        self.patch_embedding = CastConv3d(c.in_dim, c.dim, c.patch_size)
        self.text_embedding = nn.Sequential(CastLinear(c.text_dim, c.dim), nn.GELU(approximate="tanh"),
                                            CastLinear(c.dim, c.dim))
        self.time_embedding = nn.Sequential(CastLinear(c.freq_dim, c.dim), nn.SiLU(), CastLinear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), CastLinear(c.dim, 6 * c.dim))
        self.blocks = nn.ModuleList(WanBlock(c) for _ in range(c.num_layers))
        self.head = Head(c)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self._compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, dtype: torch.dtype) -> None:
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype {dtype} is not supported; "
                             "use torch.float32, torch.bfloat16 or torch.float16")
        self._compute_dtype = dtype

    @property
    def device(self) -> torch.device:
        return self.head.modulation.device

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                sequence: Optional[SequenceSplit] = None) -> torch.Tensor:
        """Velocity for latents ``x [B, in_dim, T, h, w]`` at timesteps ``t``.

        ``t``: ``[B]`` (or a scalar) or ``[B, L]`` with one value per token in (t, h, w)
        token order, L = T*(h/2)*(w/2); int- or float-valued, used as given (the
        reference feeds integer timesteps). ``context``: ``[B, L_txt, text_dim]`` text
        encoder states; shorter than 512 rows it is padded with zero rows to 512 as the
        reference does (the padded rows take part in the unmasked cross-attention);
        longer contexts are used whole, as ComfyUI does (the reference's tokenizer would
        have cut them at 512). Returns float32 ``[B, out_dim, T, h, w]``.

        ``sequence``: this process's share of a sequence-parallel group. The blocks and
        the head then run on its slice of the tokens, self-attention goes through
        ``sequence.attend`` and the head's output is gathered, so every rank returns the
        whole velocity (``engine.parallel.sequence.SequenceParallel`` passes it).
        """
        cfg, dtype = self.config, self.compute_dtype
        b, grid = self._check_inputs(x, t, context)
        length = grid[0] * grid[1] * grid[2]

        x = self.patch_embedding(x.to(self.device, dtype))
        x = x.flatten(2).transpose(1, 2).contiguous().float()

        e, e0 = self.time_embed(self._timestep_groups(t, b, grid))
        context = self.text_embed(context)
        # float64 rotation as the reference for fp32 compute; float32 is plenty below that.
        rope_dtype = torch.complex128 if dtype == torch.float32 else torch.complex64
        freqs = rope_tables(grid, cfg.head_dim, x.device, rope_dtype)

        chunk = self.ffn_chunk
        if chunk is None:
            chunk = ffn_chunk_tokens(cfg, length)  # the term engine.memory.estimates's activation estimate counts
        attend = attention
        if sequence is not None:
            x, e, e0, freqs = sequence.split(x, e, e0, freqs)
            attend = sequence.attend
        for block in self.blocks:
            x = block(x, e0, context, freqs, dtype, chunk, attend)
        out = self.head(x, e)
        if sequence is not None:
            out = sequence.gather(out)
        return self.unpatchify(out, grid)

    def time_embed(self, t_groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, G]`` timesteps -> e ``[B, G, D]`` and e0 ``[B, G, 6, D]``, float32 (spec §2.2)."""
        b, g = t_groups.shape
        sinus = sinusoidal_embedding(t_groups.flatten(), self.config.freq_dim).float()
        e = self.time_embedding(sinus)
        e0 = self.time_projection(e)
        return e.view(b, g, -1), e0.view(b, g, 6, -1)

    def text_embed(self, context: torch.Tensor) -> torch.Tensor:
        """Pad to ``text_len`` rows with zeros (never cut), then the text MLP in compute dtype."""
        context = context.to(self.device, self.compute_dtype)
        missing = self.config.text_len - context.shape[1]
        if missing > 0:
            context = F.pad(context, (0, 0, 0, missing))
        return self.text_embedding(context)

    def _timestep_groups(self, t: torch.Tensor, b: int, grid: tuple[int, int, int]) -> torch.Tensor:
        """``[B, G]`` timesteps for G equal consecutive token groups (1, frames, or tokens).

        A per-token ``[B, L]`` timestep that is constant per latent frame (TI2V-5B with
        frame 0 at t=0) becomes one value per frame; constant overall, one value. The
        result is the same as embedding every token, at a fraction of the memory.
        """
        t = torch.as_tensor(t, device=self.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.ndim == 1:
            return t.expand(b).reshape(b, 1)
        frames = t.view(b, grid[0], -1)
        if bool((t == t[:, :1]).all()):
            return t[:, :1]
        if bool((frames == frames[:, :, :1]).all()):
            return frames[:, :, 0]
        return t

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor):
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected [B, {cfg.in_dim}, T, h, w] for {cfg.variant}")
        b, _, frames, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"latent height and width must be even (2x2 patches); got {h}x{w}")
        grid = (frames, h // 2, w // 2)
        length = grid[0] * grid[1] * grid[2]
        t = torch.as_tensor(t)
        ok = t.ndim == 0 or (t.ndim == 1 and t.shape[0] in (1, b)) or (t.ndim == 2 and tuple(t.shape) == (b, length))
        if not ok:
            raise ValueError(f"t has shape {tuple(t.shape)}; expected [{b}] or [{b}, {length}] (one per token)")
        if context.ndim != 3 or context.shape[0] != b or context.shape[2] != cfg.text_dim:
            raise ValueError(f"context has shape {tuple(context.shape)}; expected [{b}, L_txt, {cfg.text_dim}]")
        return b, grid

    def unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Tokens ``[B, L, 4*C]`` -> ``[B, C, T, 2*gh, 2*gw]``; Linear index is (ph*2+pw)*C + c."""
        b, c = out.shape[0], self.config.out_dim
        f, gh, gw = grid
        out = out.view(b, f, gh, gw, 2, 2, c).permute(0, 6, 1, 2, 4, 3, 5)
        return out.reshape(b, c, f, gh * 2, gw * 2).float()
