"""Deterministic synthetic clips: one coloured shape moving in a straight line over a plain background.

A clip is fixed by a :class:`Clip` (shape, colour, direction, background, start position), and a clip
drawn from an integer seed is the same on every machine (Python's ``random.Random``, no float kernels):
the pixels are computed from the geometry in float64 and rounded to 8 bits. The caption names all
four choices, e.g. "a red disc moves right over a gray background".

Split: training clips come from seeds below ``HELD_OUT_SEED`` (the trainers check it); evaluation uses seeds from
``HELD_OUT_SEED`` up,
which give start positions (and sampling noise) the models never saw. All 96 captions appear in
training; held-out seeds test new positions and new noise, not new word combinations.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 230), "yellow": (235, 215, 40)}
BACKGROUNDS = {"black": (15, 15, 15), "gray": (128, 128, 128), "white": (240, 240, 240)}
SHAPES = ("disc", "square")
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}

WIDTH, HEIGHT, FRAMES = 64, 64, 17
SPEED = 1.0  # pixels per frame: 16 px over a clip (the tiny VAE follows slower motion within a latent frame better)
RADIUS = 7.0  # disc radius; the square's half side is RADIUS * 0.89 (about the same area)
HELD_OUT_SEED = 1_000_000


@dataclass(frozen=True)
class Clip:
    shape: str
    colour: str
    direction: str
    background: str
    x0: float  # centre at frame 0, pixels
    y0: float

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} moves {self.direction} over a {self.background} background"

    def centre(self, frame: int) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        return self.x0 + dx * SPEED * frame, self.y0 + dy * SPEED * frame


def all_captions() -> list[tuple[str, str, str, str]]:
    """Every (shape, colour, direction, background) choice, in a fixed order (96)."""
    return [(s, c, d, b) for s in SHAPES for c in COLOURS for d in DIRECTIONS for b in BACKGROUNDS]


def clip_for(shape: str, colour: str, direction: str, background: str, seed: int,
             width: int = WIDTH, height: int = HEIGHT, frames: int = FRAMES) -> Clip:
    """A clip with the given words; ``seed`` places the start so the shape stays inside the frame."""
    rng = random.Random(f"{shape}/{colour}/{direction}/{background}/{seed}")
    dx, dy = DIRECTIONS[direction]
    travel = SPEED * (frames - 1)
    margin = RADIUS + 1

    def start(d: int, size: int) -> float:
        lo, hi = margin, size - margin
        if d > 0:
            hi -= travel
        elif d < 0:
            lo += travel
        return rng.uniform(lo, max(lo, hi))

    return Clip(shape, colour, direction, background, start(dx, width), start(dy, height))


def draw_clip(seed: int, width: int = WIDTH, height: int = HEIGHT, frames: int = FRAMES) -> Clip:
    """Clip number ``seed``: words chosen by the seed (cycling through all captions), then the start."""
    words = all_captions()[seed % len(all_captions())]
    return clip_for(*words, seed=seed, width=width, height=height, frames=frames)


def render(clip: Clip, width: int = WIDTH, height: int = HEIGHT, frames: int = FRAMES) -> torch.Tensor:
    """The clip as uint8 ``[frames, height, width, 3]``; edges anti-aliased over one pixel."""
    ys = torch.arange(height, dtype=torch.float64)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float64)[None, :] + 0.5
    bg = torch.tensor(BACKGROUNDS[clip.background], dtype=torch.float64)
    fg = torch.tensor(COLOURS[clip.colour], dtype=torch.float64)
    out = torch.empty(frames, height, width, 3, dtype=torch.uint8)
    for f in range(frames):
        cx, cy = clip.centre(f)
        if clip.shape == "disc":
            dist = torch.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) - RADIUS
        else:
            dist = torch.maximum((xs - cx).abs(), (ys - cy).abs()) - RADIUS * 0.89
        cover = (0.5 - dist).clamp(0.0, 1.0)[..., None]
        out[f] = (bg * (1 - cover) + fg * cover).round().to(torch.uint8)
    return out


def to_model_range(frames_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[F, H, W, 3]`` -> float32 ``[1, 3, F, H, W]`` in [-1, 1] (the VAE's input)."""
    return (frames_uint8.float() / 127.5 - 1.0).permute(3, 0, 1, 2).unsqueeze(0)
