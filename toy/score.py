"""Score a decoded toy video against its caption: colour, background, direction, speed, jitter, stability.

The detector is plain colour segmentation. Per frame, the background colour is the per-channel median
of all pixels (the shape covers about 4 % of the frame); the shape is every pixel further than
``FG_DISTANCE`` (0-255 units) from it; its colour is the mean of those pixels and its position their
centroid. Over the clip the centroid track is fitted with a straight line (least squares), which gives
the velocity (direction and speed) and the jitter (RMS distance of the track from the line).

A video passes (``ok``) when every check holds; :data:`TARGETS` holds the thresholds. ``score`` is
the fraction of the six checks that hold, so a wrong caption, a noise video or a broken sampler lands
well below a good sample. :func:`distance` compares two videos of the same seed (for example a sample
with a reference run of 50 UniPC steps): pixel RMS and the RMS distance between their centroid tracks.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from . import data

FG_DISTANCE = 60.0
TARGETS = {
    "visible": 0.8,  # fraction of frames where a shape of plausible size is found, at least
    "speed_error": 0.35,  # |speed - caption speed| / caption speed, at most
    "jitter": 1.5,  # pixels RMS from the fitted straight line, at most
    "background_drift": 12.0,  # 0-255 units: the largest distance of a frame's background from the clip's, at most
}
AREA = math.pi * data.RADIUS ** 2


@dataclass
class Score:
    colour: str  # detected shape colour (majority over frames), "" if none
    background: str
    velocity: tuple[float, float]  # pixels per frame (x right, y down)
    visible: float
    speed_error: float
    jitter: float
    background_drift: float
    colour_ok: bool
    background_ok: bool
    direction_ok: bool
    ok: bool
    score: float

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"score {self.score:.2f} ({'PASS' if self.ok else 'FAIL'}): colour {self.colour or '-'} "
                f"{'ok' if self.colour_ok else 'WRONG'}, background {self.background} "
                f"{'ok' if self.background_ok else 'WRONG'}, velocity ({self.velocity[0]:+.2f}, "
                f"{self.velocity[1]:+.2f}) px/frame, direction {'ok' if self.direction_ok else 'WRONG'}, "
                f"speed error {self.speed_error:.0%}, jitter {self.jitter:.2f} px, visible {self.visible:.0%}, "
                f"background drift {self.background_drift:.1f}")


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[F, H, W, 3]`` in [0, 1] (or already uint8) -> float 0-255 ``[F, H, W, 3]``."""
    video = video.detach()
    if video.dtype == torch.uint8:
        return video.float()
    return (video.float().clamp(0, 1) * 255).round()


def nearest(colour: torch.Tensor, palette: dict) -> str:
    return min(palette, key=lambda name: float((colour - torch.tensor(palette[name], dtype=torch.float32)).norm()))


def track(video: torch.Tensor):
    """Per frame: background colour [F, 3], shape colour [F, 3], centroid [F, 2], area [F]."""
    frames = to_uint8_frames(video)
    f, h, w, _ = frames.shape
    pixels = frames.reshape(f, -1, 3)
    bg = pixels.median(dim=1).values
    dist = (pixels - bg[:, None]).norm(dim=2)
    mask = (dist > FG_DISTANCE).float()
    area = mask.sum(dim=1)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    safe = area.clamp_min(1)
    cx = (mask * xs.reshape(1, -1)).sum(1) / safe
    cy = (mask * ys.reshape(1, -1)).sum(1) / safe
    fg = (mask[..., None] * pixels).sum(1) / safe[:, None]
    return bg, fg, torch.stack([cx, cy], dim=1), area


def fit_line(points: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Least-squares velocity [2] of ``points [n, 2]`` at ``frames [n]`` and the RMS residual."""
    t = frames.float() - frames.float().mean()
    p = points - points.mean(0)
    denom = float((t * t).sum())
    v = (t[:, None] * p).sum(0) / denom if denom > 0 else torch.zeros(2)
    resid = p - t[:, None] * v
    return v, float(resid.square().sum(1).mean().sqrt())


def score_video(video: torch.Tensor, caption: str) -> Score:
    """Score ``video`` (IMAGE ``[F, H, W, 3]`` in [0, 1], or uint8) against a toy ``caption``."""
    words = caption.split() + [""] * 8
    colour, direction, background = words[1], words[4], words[7]
    if colour not in data.COLOURS or direction not in data.DIRECTIONS or background not in data.BACKGROUNDS:
        raise ValueError(f"caption {caption!r} is not a toy caption like "
                         f"'a red disc moves right over a gray background'")
    bg, fg, centre, area = track(video)
    seen = (area > 0.3 * AREA) & (area < 3.0 * AREA)
    visible = float(seen.float().mean())
    frame_idx = torch.arange(len(area))[seen]
    if len(frame_idx) >= 2:
        v, jitter = fit_line(centre[seen], frame_idx)
        names = [nearest(c, data.COLOURS) for c in fg[seen]]
        detected = max(set(names), key=names.count)
    else:
        v, jitter, detected = torch.zeros(2), float("inf"), ""
    bg_name = nearest(bg.median(0).values, data.BACKGROUNDS)
    drift = float((bg - bg.median(0).values).norm(dim=1).max())
    want = torch.tensor(data.DIRECTIONS[direction], dtype=torch.float32)
    along = float((v * want).sum())
    across = float((v - along * want).norm())
    speed_error = abs(along - data.SPEED) / data.SPEED if along > 0 else float("inf")
    checks = {
        "colour_ok": detected == colour,
        "background_ok": bg_name == background,
        "direction_ok": along > 0 and across < 0.5 * along,
        "speed_ok": speed_error <= TARGETS["speed_error"],
        "jitter_ok": jitter <= TARGETS["jitter"] and visible >= TARGETS["visible"],
        "stable_ok": drift <= TARGETS["background_drift"],
    }
    return Score(colour=detected, background=bg_name, velocity=(float(v[0]), float(v[1])), visible=visible,
                 speed_error=speed_error, jitter=jitter, background_drift=drift,
                 colour_ok=checks["colour_ok"], background_ok=checks["background_ok"],
                 direction_ok=checks["direction_ok"], ok=all(checks.values()),
                 score=sum(checks.values()) / len(checks))


def distance(video: torch.Tensor, reference: torch.Tensor) -> dict:
    """How far ``video`` is from ``reference`` (same size): pixel RMS (0-255) and centroid-track RMS (px)."""
    a, b = to_uint8_frames(video), to_uint8_frames(reference)
    if a.shape != b.shape:
        raise ValueError(f"videos differ in shape: {tuple(a.shape)} vs reference {tuple(b.shape)}")
    _, _, ca, _ = track(video)
    _, _, cb, _ = track(reference)
    return {"pixel_rms": float((a - b).square().mean().sqrt()),
            "track_rms": float((ca - cb).square().sum(1).mean().sqrt())}
