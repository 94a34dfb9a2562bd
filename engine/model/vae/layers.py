"""Building blocks shared by the Wan 2.1 and Wan 2.2 VAEs (spec §4, §4.3).

Module and parameter names follow the released checkpoints (``residual.2``,
``resample.1``, ``time_conv``, ``head.0.gamma`` ...), so a state dict loads as is.

Time is processed in chunks. Every layer that looks across frames takes a
``cache`` (a plain dict, created per encode/decode call and keyed by module) that
carries what it still needs from earlier chunks: the last input frames of a causal
conv, the unpaired frame of a strided time conv, whether the first chunk has been
seen. Feeding a sequence in any chunking (including one single chunk, the
"whole-sequence" path) therefore gives the same result, up to float rounding, as
the official full-sequence rules of spec §4.3, and the model itself holds no state.

Every 2-D (per-frame) conv runs as a 3-D conv with a ``(1, k, k)`` kernel over the
5-D tensor: same sums, no ``[B, C, T, H, W] <-> [B*T, C, H, W]`` copies.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

RMS_EPS = 1e-12  # F.normalize's floor on the L2 norm, as in the reference
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class CausalConv3d(nn.Conv3d):
    """Conv3d, zero-padded symmetrically in space and with ``2 * p_t`` frames in front only.

    Across chunks the front padding is the previous chunk's last ``2 * p_t`` input
    frames (zeros before the first chunk), so chunked and whole-sequence agree.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size, stride=1, padding=0):
        k = _triple(kernel_size)
        p = _triple(padding)
        super().__init__(in_dim, out_dim, k, stride=stride, padding=(0, p[1], p[2]))
        self.history = 2 * p[0]

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        if self.history:
            past = cache.get(self)
            if past is None:
                past = x.new_zeros(*x.shape[:2], self.history, *x.shape[3:])
            x = torch.cat([past, x], dim=2)
            # clone: a view would keep the whole padded chunk alive until the next one.
            cache[self] = x[:, :, -self.history :].clone()
        return conv3d(x, self.weight, self.bias, self.stride, self.padding)


def _triple(v) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def conv2d_per_frame(conv: nn.Conv2d, x: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Apply a 2-D conv to every frame of ``x`` [B, C, T, H, W]."""
    return conv3d(x, conv.weight.unsqueeze(2), conv.bias, (1, stride, stride), (0, padding, padding))


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding) -> torch.Tensor:
    """``F.conv3d``, but a conv whose output has a single frame runs as a 2-D conv.

    Streaming decode and encode feed chunks of 1-4 frames, so many convs see exactly
    ``kernel_t`` input frames and produce one. PyTorch's CPU backend sends those 3-D
    convs to its slow reference kernel (about a quarter of decode time, measured);
    folding time into channels is the same sum as one 2-D conv, a zero-copy view of
    contiguous tensors, which takes the fast (oneDNN) path.
    """
    frames, kernel_t = x.shape[2], weight.shape[2]
    if frames != kernel_t or padding[0] != 0 or not x.is_contiguous():
        return F.conv3d(x, weight, bias, stride, padding)
    b, c, _, h, w = x.shape
    out = F.conv2d(x.view(b, c * frames, h, w), weight.reshape(weight.shape[0], -1, *weight.shape[3:]), bias,
                   stride[1:], padding[1:])
    return out.unsqueeze(2)


class RMSNorm(nn.Module):
    """``x / max(||x||_2, eps) * sqrt(C) * gamma`` over the channel dim, per location (key ``gamma``)."""

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        # The checkpoints store gamma as (C,1,1,1) for 3-D use and (C,1,1) inside attention.
        self.gamma = nn.Parameter(torch.ones(dim, *([1] * (2 if images else 3))))
        self.scale = dim**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = self.gamma.reshape(-1, *([1] * (x.ndim - 2))) * self.scale
        xf = x.float() if x.dtype in _LOW_PRECISION else x  # the norm is taken in fp32, as the reference
        y = xf / torch.linalg.vector_norm(xf, dim=1, keepdim=True).clamp_min(RMS_EPS)
        return y.to(x.dtype).mul_(gain)


class ResidualBlock(nn.Module):
    """norm-SiLU-conv3 twice plus a shortcut (1x1x1 conv when the width changes)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # Indices match the checkpoint: 0 norm, 1 SiLU, 2 conv, 3 norm, 4 SiLU, 5 dropout (0), 6 conv.
        self.residual = nn.Sequential(
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        r = self.residual
        h = r[2](F.silu(r[0](x), inplace=True), cache)
        h = r[6](F.silu(r[3](h), inplace=True), cache)
        return h.add_(x if self.shortcut is None else self.shortcut(x, cache))


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame, plus the input."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 4, 1).reshape(b * t, 1, h * w, c)
        qkv = F.linear(tokens, self.to_qkv.weight.view(3 * c, c), self.to_qkv.bias)
        q, k, v = qkv.chunk(3, dim=-1)  # channels [0,C) are q, [C,2C) k, [2C,3C) v
        out = F.scaled_dot_product_attention(q, k, v)
        out = F.linear(out, self.proj.weight.view(c, c), self.proj.bias)
        # x first: the sum takes x's (contiguous) layout, not the permuted one.
        return x + out.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class MiddleBlock(nn.ModuleList):
    """``middle.0`` residual, ``middle.1`` attention, ``middle.2`` residual."""

    def __init__(self, dim: int):
        super().__init__([ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim)])

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        for layer in self:
            x = layer(x, cache)
        return x


class Head(nn.Sequential):
    """``head.0`` norm, SiLU, ``head.2`` 3x3x3 causal conv."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        return self[2](F.silu(self[0](x), inplace=True), cache)


class Resample(nn.Module):
    """Spatial 2x down/upsampling, optionally with a 2x temporal change (``time_conv``).

    ``resample.0`` is the parameter-free resize of the reference (pad or nearest
    upsample), done inline here; ``resample.1`` is the per-frame 3x3 conv.
    """

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str, out_dim: int | None = None):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown resample mode {mode!r}; expected one of {self.MODES}")
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(nn.Identity(), nn.Conv2d(dim, out_dim or dim, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.Identity(), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        conv = self.resample[1]
        if self.mode == "upsample3d":
            x = self._double_frames(x, cache)
        if self.mode.startswith("upsample"):
            return conv2d_per_frame(conv, _upsample_nearest2x(x), padding=1)
        # Zero-pad right and bottom by one, then a stride-2 conv without padding.
        x = conv2d_per_frame(conv, F.pad(x, (0, 1, 0, 1)), stride=2)
        return self._halve_frames(x, cache) if self.mode == "downsample3d" else x

    def _double_frames(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """Frame 0 passes through; every later frame becomes two (time_conv's C -> 2C halves)."""
        first = self not in cache
        cache[self] = True
        head, rest = (x[:, :, :1], x[:, :, 1:]) if first else (None, x)
        if rest.shape[2] == 0:
            return head
        y = self.time_conv(rest, cache)
        b, c2, t, h, w = y.shape
        # channels [0,C) -> frame 2i, [C,2C) -> frame 2i+1
        y = y.view(b, 2, c2 // 2, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c2 // 2, 2 * t, h, w)
        return y if head is None else torch.cat([head, y], dim=2)

    def _halve_frames(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """Output ``[y0] ++ time_conv(y)``: stride-2 windows (2j-2, 2j-1, 2j) over the whole sequence.

        The cache holds the frames after the last complete window (starting with the
        window's end frame, which the next window shares).
        """
        first = self not in cache
        buf = x if first else torch.cat([cache[self], x], dim=2)
        n = (buf.shape[2] - 1) // 2  # complete windows in buf
        cache[self] = buf[:, :, 2 * n :].clone()
        parts = [x[:, :, :1]] if first else []
        if n:
            parts.append(self.time_conv(buf[:, :, : 2 * n + 1]))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def _upsample_nearest2x(x: torch.Tensor) -> torch.Tensor:
    """2x nearest upsampling of H and W ("nearest-exact" at scale 2 is plain duplication)."""
    b, c, t, h, w = x.shape
    return x[:, :, :, :, None, :, None].expand(b, c, t, h, 2, w, 2).reshape(b, c, t, 2 * h, 2 * w)


class AvgDown3D(nn.Module):
    """Parameter-free shortcut of the Wan 2.2 encoder: space/time-to-channel, then group means.

    The whole sequence gets ``factor_t - 1`` zero frames in front; frame counts here
    are always odd (1 + 4n, 1 + 2n), which is the reference's pad rule. Across chunks
    the cache holds the frames not yet grouped.
    """

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        factor = factor_t * factor_s * factor_s
        if (in_dim * factor) % out_dim:
            raise ValueError(f"AvgDown3D: {in_dim} channels x {factor} cannot be split into {out_dim} groups")
        self.out_dim, self.factor_t, self.factor_s = out_dim, factor_t, factor_s
        self.group = in_dim * factor // out_dim

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        if ft > 1:
            past = cache.get(self)
            if past is None:
                past = x.new_zeros(*x.shape[:2], ft - 1, *x.shape[3:])
            x = torch.cat([past, x], dim=2)
            usable = (x.shape[2] // ft) * ft
            cache[self] = x[:, :, usable:].clone()
            x = x[:, :, :usable]
        b, c, t, h, w = x.shape
        x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs)
        # new channel = (c, t-offset, h-offset, w-offset), c slowest
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, self.out_dim, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp3D(nn.Module):
    """Parameter-free shortcut of the Wan 2.2 decoder: repeat channels, scatter to time/space.

    The first chunk drops its first ``factor_t - 1`` frames (frame 0 is not doubled).
    """

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        factor = factor_t * factor_s * factor_s
        if (out_dim * factor) % in_dim:
            raise ValueError(f"DupUp3D: {out_dim} channels x {factor} is not a multiple of {in_dim}")
        self.out_dim, self.factor_t, self.factor_s = out_dim, factor_t, factor_s
        self.repeats = out_dim * factor // in_dim

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        first = self not in cache
        cache[self] = True
        ft, fs = self.factor_t, self.factor_s
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1).view(b, self.out_dim, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_dim, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1 :] if first else x


class EncoderStack(nn.Module):
    """``conv1``, the ``downsamples`` blocks, ``middle`` and ``head``, each fed the chunk cache.

    The Wan 2.1 and 2.2 encoders differ only in what those blocks are; they share this order.
    """

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        x = self.conv1(x, cache)
        for block in self.downsamples:
            x = block(x, cache)
        return self.head(self.middle(x, cache), cache)


class DecoderStack(nn.Module):
    """``conv1``, ``middle``, the ``upsamples`` blocks and ``head`` (shared by both decoders)."""

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        x = self.middle(self.conv1(x, cache), cache)
        for block in self.upsamples:
            x = block(x, cache)
        return self.head(x, cache)

