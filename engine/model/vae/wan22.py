"""Wan 2.2 VAE encoder and decoder (spec §4.2): residual stages, 2x2 pixel patchify.

Real config: encoder ``dim=160``, decoder ``dec_dim=256``, ``z_dim=48``. Pixels are
patchified 2x2 into 12 channels before the encoder and back after the decoder, so
the overall compression is 4x16x16.
"""
import torch
import torch.nn as nn

from .layers import (AvgDown3D, CausalConv3d, DecoderStack, DupUp3D, EncoderStack, Head, MiddleBlock, Resample,
                     ResidualBlock)

DIM_MULT = (1, 2, 4, 4)
NUM_RES_BLOCKS = 2
TEMPORAL_DOWNSAMPLE = (False, True, True)
PATCH = 2


def patchify(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F, H, W] -> [B, 4C, F, H/2, W/2]; new channel ``c*4 + w_offset*2 + h_offset``."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f, h // PATCH, PATCH, w // PATCH, PATCH)
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * PATCH * PATCH, f, h // PATCH, w // PATCH)


def unpatchify(x: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`patchify`."""
    b, c4, f, h, w = x.shape
    c = c4 // (PATCH * PATCH)
    x = x.reshape(b, c, PATCH, PATCH, f, h, w)  # (c, w_offset, h_offset, ...)
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, c, f, h * PATCH, w * PATCH)


class DownResidualBlock(nn.Module):
    """Two residual blocks and an optional downsample, plus the AvgDown3D shortcut."""

    def __init__(self, in_dim: int, out_dim: int, temporal: bool, down: bool):
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, 2 if temporal else 1, 2 if down else 1)
        blocks: list[nn.Module] = [ResidualBlock(in_dim, out_dim), ResidualBlock(out_dim, out_dim)]
        if down:
            blocks.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        shortcut = self.avg_shortcut(x, cache)
        for block in self.downsamples:
            x = block(x, cache)
        return x.add_(shortcut)


class UpResidualBlock(nn.Module):
    """Three residual blocks and an optional upsample, plus the DupUp3D shortcut when upsampling."""

    def __init__(self, in_dim: int, out_dim: int, temporal: bool, up: bool):
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2) if up else None
        blocks: list[nn.Module] = [ResidualBlock(in_dim, out_dim)]
        blocks += [ResidualBlock(out_dim, out_dim) for _ in range(NUM_RES_BLOCKS)]
        if up:
            blocks.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", out_dim=out_dim))
        self.upsamples = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        h = x
        for block in self.upsamples:
            h = block(h, cache)
        return h if self.avg_shortcut is None else h.add_(self.avg_shortcut(x, cache))


class Encoder22(EncoderStack):
    """Patchified video [B, 12, F, H/2, W/2] -> [B, 2*z_dim, T, H/16, W/16]."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        dims = [dim * m for m in (1, *DIM_MULT)]
        self.conv1 = CausalConv3d(3 * PATCH * PATCH, dims[0], 3, padding=1)
        last = len(DIM_MULT) - 1
        self.downsamples = nn.ModuleList(
            DownResidualBlock(cin, cout, temporal=i != last and TEMPORAL_DOWNSAMPLE[i], down=i != last)
            for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:]))
        )
        self.middle = MiddleBlock(dims[-1])
        self.head = Head(dims[-1], out_dim)


class Decoder22(DecoderStack):
    """Latent [B, z_dim, T, h, w] -> patchified RGB [B, 12, 1 + 4(T-1), 8h, 8w] (unclamped)."""

    def __init__(self, dim: int, z_dim: int):
        super().__init__()
        dims = [dim * m for m in (DIM_MULT[-1], *reversed(DIM_MULT))]
        temporal_upsample = tuple(reversed(TEMPORAL_DOWNSAMPLE))
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = MiddleBlock(dims[0])
        last = len(DIM_MULT) - 1
        self.upsamples = nn.ModuleList(
            UpResidualBlock(cin, cout, temporal=i != last and temporal_upsample[i], up=i != last)
            for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:]))
        )
        self.head = Head(dims[-1], 3 * PATCH * PATCH)
