"""Spatial tiling for large frames: split, process each tile alone, blend the overlaps.

Tiles are laid out on the latent grid (so every tile is a whole number of latent
cells and maps to an exact pixel rectangle). Neighbouring tiles share ``overlap``
pixels; inside the shared band each tile's weight ramps linearly towards its edge
and the weights are normalised to sum to one everywhere, so the blend is a convex
combination and no seam is a hard cut.

Tiling is an approximation: every tile sees zero padding at its own border and its
own per-frame attention, so results differ slightly from untiled processing near
the seams (see tests/test_vae_tiling.py for the measured tolerance).
"""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tiling:
    """Tile size and overlap in pixels (rounded down to whole latent cells of the VAE)."""

    tile_size: int = 512
    overlap: int = 64

    def __post_init__(self):
        for name in ("tile_size", "overlap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"tiling {name} must be a non-negative integer number of pixels, got {value!r}")
        if self.overlap >= self.tile_size:
            raise ValueError(
                f"tiling overlap ({self.overlap} px) must be smaller than tile_size ({self.tile_size} px); "
                "try overlap 64 with tile_size 256 or more"
            )

    def cells(self, stride: int) -> tuple[int, int]:
        """``(tile, overlap)`` in latent cells of a VAE with this spatial stride."""
        tile, overlap = self.tile_size // stride, self.overlap // stride
        if tile < 1:
            raise ValueError(
                f"tile_size {self.tile_size} px is smaller than one latent cell ({stride} px); use at least {stride}"
            )
        return tile, min(overlap, tile - 1)


@dataclass(frozen=True)
class Tile:
    """One tile: latent-cell ranges and per-axis blend weights at a given output scale."""

    rows: slice
    cols: slice
    row_weight: torch.Tensor  # [rows * scale]
    col_weight: torch.Tensor  # [cols * scale]

    def scaled(self, scale: int) -> tuple[slice, slice]:
        """The tile's rows and columns at ``scale`` output units per latent cell."""
        return (slice(self.rows.start * scale, self.rows.stop * scale),
                slice(self.cols.start * scale, self.cols.stop * scale))


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Cover ``[0, length)`` with windows of ``tile`` cells stepping ``tile - overlap``.

    The last window is aligned to the end, so every window is full size (the last
    overlap may be larger than asked).
    """
    if length <= tile:
        return [(0, length)]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    return [(s, s + tile) for s in starts]


def blend_weights(windows: list[tuple[int, int]], overlap: int, scale: int) -> list[torch.Tensor]:
    """Per-window 1-D weights at ``scale`` units per cell, summing to one at every position."""
    length = windows[-1][1] * scale
    ramp = overlap * scale
    weights = []
    for i, (start, stop) in enumerate(windows):
        pos = torch.arange(start * scale, stop * scale, dtype=torch.float64)
        w = torch.ones_like(pos)
        if ramp and i > 0:
            w = torch.minimum(w, (pos - start * scale + 0.5) / ramp)
        if ramp and i < len(windows) - 1:
            w = torch.minimum(w, (stop * scale - pos - 0.5) / ramp)
        weights.append(w)
    total = torch.zeros(length, dtype=torch.float64)
    for (start, stop), w in zip(windows, weights):
        total[start * scale : stop * scale] += w
    return [(w / total[start * scale : stop * scale]).float() for (start, stop), w in zip(windows, weights)]


def plan_tiles(height: int, width: int, tiling: Tiling | None, stride: int, scale: int) -> list[Tile]:
    """Tiles over a ``height x width`` latent grid; weights at ``scale`` output units per cell.

    ``tiling=None`` gives one tile covering everything with unit weights.
    """
    if tiling is None:
        tile_h, tile_w, overlap = height, width, 0
    else:
        tile, overlap = tiling.cells(stride)
        tile_h, tile_w = tile, tile
    row_windows, col_windows = spans(height, tile_h, overlap), spans(width, tile_w, overlap)
    row_weights = blend_weights(row_windows, overlap, scale)
    col_weights = blend_weights(col_windows, overlap, scale)
    return [
        Tile(slice(*r), slice(*c), rw, cw)
        for r, rw in zip(row_windows, row_weights)
        for c, cw in zip(col_windows, col_weights)
    ]
