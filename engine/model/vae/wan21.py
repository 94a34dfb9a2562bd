"""Wan 2.1 VAE encoder and decoder (spec §4.1): flat lists of blocks, 3 RGB channels.

Real config: ``dim=96, z_dim=16, dim_mult=(1,2,4,4), num_res_blocks=2``; temporal
downsampling in the 2nd and 3rd stages, so 1 + 4n frames <-> 1 + n latent frames,
and 8x8 spatial compression.
"""
import torch.nn as nn

from .layers import CausalConv3d, DecoderStack, EncoderStack, Head, MiddleBlock, Resample, ResidualBlock

DIM_MULT = (1, 2, 4, 4)
NUM_RES_BLOCKS = 2
TEMPORAL_DOWNSAMPLE = (False, True, True)


class Encoder21(EncoderStack):
    """RGB video [B, 3, F, H, W] -> [B, 2*z_dim, T, H/8, W/8] (mean and log-variance)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        dims = [dim * m for m in (1, *DIM_MULT)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        last = len(DIM_MULT) - 1
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(NUM_RES_BLOCKS):
                blocks.append(ResidualBlock(cin, cout))
                cin = cout
            if i != last:
                blocks.append(Resample(cout, "downsample3d" if TEMPORAL_DOWNSAMPLE[i] else "downsample2d"))
        self.downsamples = nn.ModuleList(blocks)
        self.middle = MiddleBlock(dims[-1])
        self.head = Head(dims[-1], out_dim)


class Decoder21(DecoderStack):
    """Latent [B, z_dim, T, h, w] -> RGB [B, 3, 1 + 4(T-1), 8h, 8w] (unclamped)."""

    def __init__(self, dim: int, z_dim: int):
        super().__init__()
        dims = [dim * m for m in (DIM_MULT[-1], *reversed(DIM_MULT))]
        temporal_upsample = tuple(reversed(TEMPORAL_DOWNSAMPLE))
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = MiddleBlock(dims[0])
        blocks: list[nn.Module] = []
        last = len(DIM_MULT) - 1
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                cin //= 2  # the previous stage's upsample halved the width
            for _ in range(NUM_RES_BLOCKS + 1):
                blocks.append(ResidualBlock(cin, cout))
                cin = cout
            if i != last:
                mode = "upsample3d" if temporal_upsample[i] else "upsample2d"
                blocks.append(Resample(cout, mode, out_dim=cout // 2))
        self.upsamples = nn.ModuleList(blocks)
        self.head = Head(dims[-1], 3)
