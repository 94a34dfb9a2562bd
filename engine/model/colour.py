"""Colour match of a new clip to a reference: per-channel mean and standard deviation in Lab or YCbCr.

Chained extensions drift in colour and contrast: each clip's statistics move a little from the
previous one's, and the moves add up. The correction here is the classic statistics transfer
(Reinhard et al., "Color Transfer between Images", 2001): convert to a colour space whose channels
are nearly decorrelated, then give every channel of the clip the mean and spread of the reference.

* **Lab** (CIE L*a*b*, D65, from sRGB): lightness apart from the two colour axes, and perceptually
  even steps, so a brightness drift and a tint are corrected independently and by what the eye sees.
* **YCbCr** (BT.601, full range): a linear transform of RGB; cheaper, luma and two chroma axes.

One transform is fitted per clip (from the frames given as its ``source``) and applied to every frame
of the clip, so the correction cannot flicker inside a clip. The gain per channel is bounded
(:data:`GAIN_RANGE`): a clip that would need its contrast halved or doubled has changed content, not
drifted, and a near-flat channel (a plain background) would otherwise get an unbounded gain.
"""
from __future__ import annotations

import torch

SPACES = ("lab", "ycbcr")
GAIN_RANGE = (0.5, 2.0)
EPS = 1e-4

# sRGB (D65) -> CIE XYZ, and the D65 white point
_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
# BT.601 full-range RGB -> YCbCr (offsets dropped: they cancel in the statistics transfer)
_RGB_TO_YCC = torch.tensor([[0.299, 0.587, 0.114],
                            [-0.168736, -0.331264, 0.5],
                            [0.5, -0.418688, -0.081312]], dtype=torch.float64)
_DELTA = 6.0 / 29.0


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    c = c.clamp_min(0.0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1.0 / 2.4) - 0.055)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA ** 3, t.clamp_min(0.0) ** (1.0 / 3.0), t / (3 * _DELTA ** 2) + 4.0 / 29.0)


def _f_inv(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA, t ** 3, 3 * _DELTA ** 2 * (t - 4.0 / 29.0))


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` sRGB in [0, 1] -> CIE Lab (L in 0..100), float64."""
    xyz = _srgb_to_linear(rgb.double().clamp(0.0, 1.0)) @ _RGB_TO_XYZ.T / _WHITE
    fx, fy, fz = _f(xyz).unbind(-1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab -> sRGB ``[..., 3]`` (not clamped), float64."""
    fy = (lab[..., 0] + 16.0) / 116.0
    f = torch.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], dim=-1)
    xyz = _f_inv(f) * _WHITE
    return _linear_to_srgb(xyz @ torch.linalg.inv(_RGB_TO_XYZ).T)


def to_space(rgb: torch.Tensor, space: str) -> torch.Tensor:
    if space == "lab":
        return rgb_to_lab(rgb)
    if space == "ycbcr":
        return rgb.double() @ _RGB_TO_YCC.T
    raise ValueError(f"colour space must be one of {SPACES}, got {space!r}")


def from_space(values: torch.Tensor, space: str) -> torch.Tensor:
    if space == "lab":
        return lab_to_rgb(values)
    if space == "ycbcr":
        return values @ torch.linalg.inv(_RGB_TO_YCC).T
    raise ValueError(f"colour space must be one of {SPACES}, got {space!r}")


def channel_stats(rgb: torch.Tensor, space: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) ``[3]`` of IMAGE frames ``[F, H, W, 3]`` in ``space`` (float64)."""
    values = to_space(rgb[..., :3], space).reshape(-1, 3)
    return values.mean(0), values.std(0, unbiased=False)


def match_colour(images: torch.Tensor, source: torch.Tensor, reference: torch.Tensor, space: str = "lab",
                 strength: float = 1.0) -> torch.Tensor:
    """``images`` with the colour transform that maps ``source``'s statistics to ``reference``'s.

    ``source`` is some frames of ``images`` (the ones that should look like ``reference``); the
    transform is ``(v - mean_s) * gain + mean_r`` per channel with ``gain = std_r / std_s`` bounded
    to :data:`GAIN_RANGE`, blended with the input by ``strength`` (0 = unchanged, 1 = full), and the
    result clamped to [0, 1]. Returns float32 IMAGE frames of ``images``' shape on the CPU; extra
    channels (alpha) pass through.
    """
    _check(space, strength)
    if float(strength) == 0.0:
        return images.float().clone()
    # float64 statistics on the CPU (IMAGE frames live there in ComfyUI; some accelerators lack float64)
    images, source, reference = (t.detach().cpu() for t in (images, source, reference))
    return ColourTransform(channel_stats(source, space), channel_stats(reference, space), space, strength)(images)


def _check(space: str, strength: float) -> None:
    if space not in SPACES:
        raise ValueError(f"colour space must be one of {SPACES}, got {space!r}")
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")


class ColourTransform:
    """The per-channel transform fitted from (mean, std) of a source and of a reference in ``space``."""

    def __init__(self, source: tuple, reference: tuple, space: str = "lab", strength: float = 1.0):
        _check(space, strength)
        (self.mean_s, std_s), (self.mean_r, std_r) = source, reference
        self.gain = ((std_r + EPS) / (std_s + EPS)).clamp(*GAIN_RANGE)
        self.space, self.strength = space, float(strength)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """IMAGE frames -> matched float32 frames on the CPU (any number of frames: one transform for all)."""
        images = images.detach().cpu()
        if self.strength == 0.0:
            return images.float().clone()
        values = to_space(images[..., :3], self.space)
        matched = (values - self.mean_s) * self.gain + self.mean_r
        values = values + self.strength * (matched - values)
        out = images.float().clone()
        out[..., :3] = from_space(values, self.space).clamp(0.0, 1.0).float()
        return out


class RunningStats:
    """Per-channel mean and (population) std in ``space`` of frames seen a few at a time.

    For a clip that is never held whole: each batch's float64 mean and sum of squared deviations are
    merged with Chan et al.'s pairwise update, which stays accurate for any number of batches (no
    sum-of-squares cancellation). Equals :func:`channel_stats` of all the frames to float64 rounding.
    """

    def __init__(self, space: str = "lab"):
        _check(space, 1.0)
        self.space, self.count = space, 0
        self.mean = torch.zeros(3, dtype=torch.float64)
        self.m2 = torch.zeros(3, dtype=torch.float64)

    def add(self, images: torch.Tensor) -> None:
        values = to_space(images.detach().cpu()[..., :3], self.space).reshape(-1, 3)
        n = values.shape[0]
        if n == 0:
            return
        mean = values.mean(0)
        m2 = ((values - mean) ** 2).sum(0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.count:
            raise ValueError("no frames were added, so there are no colour statistics")
        return self.mean, (self.m2 / self.count).sqrt()


def overlap_frames(images: torch.Tensor, previous: torch.Tensor, overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames of the new clip, frames of the previous one) that show the same moments of the join.

    A clip made from an ``overlap`` of the previous one repeats its last frames at its start. Frame 0
    is left out when there are more: in the SVI layout it is the anchor's slot, not the previous
    clip's. With ``overlap`` 0 or 1 the first new frame is compared with the previous clip's last.
    """
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap must be a whole number of frames >= 0, got {overlap!r}")
    if overlap > images.shape[0] or overlap > previous.shape[0]:
        raise ValueError(f"overlap {overlap} is longer than a clip ({images.shape[0]} new frames, "
                         f"{previous.shape[0]} reference frames); link the extend node's overlap output")
    if overlap <= 1:
        return images[:1], previous[previous.shape[0] - 1:]
    return images[1:overlap], previous[previous.shape[0] - (overlap - 1):]
