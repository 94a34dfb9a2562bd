"""Keyframes and clip continuation as pure layout logic: which video frames are known, and where.

A *keyframe* is one or more images placed at consecutive video frames of a clip. Three
things are built from a list of them here (the nodes add image fitting and the VAE):

* **I2V-A14B**: per-video-frame known flags for :func:`conditioning.official_i2v_mask`. The
  conditioning video holds the keyframe images and zeros (mid-gray) elsewhere, as the
  official code and ComfyUI's ``WanFirstLastFrameToVideo`` build it.
* **TI2V-5B**: the latent frames to keep (noise mask 0). The causal Wan 2.2 VAE gives latent
  frame 0 to video frame 0 alone and latent frame j >= 1 to video frames 4j-3 .. 4j, so a
  keyframe can only pin *whole* latent frames: it must start at frame 0 or at 4j-3 and end
  at 4j (see :func:`ti2v_latent_span`). A single image at a frame 4j is held over the four
  frames 4j-3 .. 4j (an end image: the last four frames).
* **Continuation**: the last ``overlap`` frames of a clip become a keyframe at frame 0 of
  the next clip, and :func:`join_clips` concatenates the two without repeating them.

Frame indices may be negative: -1 is the last frame. Nothing here knows about ComfyUI.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..errors import public
from .geometry import check_frames


log = logging.getLogger("wan22duo")

PIXEL_LIMITS = (-0.5, 1.5)  # outside: refused (not an IMAGE in 0..1; 0..255 pixels most of all)
PIXEL_SLACK = 1e-3  # outside 0..1 by more, within the limits: a warning


@public
class KeyframeError(ValueError):
    """Keyframes that do not fit the clip, overlap each other, or cannot be kept as whole latent frames."""


@dataclass(frozen=True)
class Keyframe:
    """``images`` (``[n, H, W, C]``, ComfyUI IMAGE) at video frames ``frame .. frame + n - 1``.

    ``frame`` < 0 counts from the end (-1 = the last frame). ``name`` is used in messages.
    """

    frame: int
    images: torch.Tensor
    name: str

    @property
    def count(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class Placed:
    """A keyframe resolved against a clip: frames ``[start, stop)``."""

    start: int
    stop: int
    images: torch.Tensor
    name: str


def check_images(images, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] < 3 or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise KeyframeError(f"{name} must be an IMAGE [frames, height, width, 3] in [0, 1], got {shape}")
    return check_pixels(images, name)


def check_pixels(images: torch.Tensor, name: str) -> torch.Tensor:
    """The one pixel check of every image input: finite values in about 0..1.

    A NaN/inf pixel would otherwise be clamped to black (TI2V-5B's 8-bit resize) or spread
    over the whole video (the VAE); values far outside 0..1 are almost always 0..255 pixels
    that were not divided by 255. Slight overshoot (a sharpening or upscaling node) only warns;
    the fitting clamps it. One pass over the pixels (``aminmax``), no copy.
    """
    if not images.is_floating_point():
        raise KeyframeError(f"{name} has dtype {str(images.dtype).replace('torch.', '')}; an IMAGE holds float "
                            "pixels in 0..1 (LoadImage, VAEDecode and every image node give those)")
    if images.numel() == 0:
        return images
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = int((~torch.isfinite(images)).sum())
        raise KeyframeError(f"{name} holds {bad} NaN/inf pixel values of {images.numel()}; they would turn into black "
                            "or spread over the whole video. Check the node that made the image (a VAE decode in fp16, "
                            "an upscaler or a custom node).")
    if low < PIXEL_LIMITS[0] or high > PIXEL_LIMITS[1]:
        hint = " (0..255 pixels? divide them by 255)" if high > 2.0 else ""
        raise KeyframeError(f"{name} holds pixel values from {low:g} to {high:g}, far outside an IMAGE's 0..1{hint}; "
                            "load images with LoadImage or decode them with a VAE node.")
    if low < -PIXEL_SLACK or high > 1.0 + PIXEL_SLACK:
        log.warning("%s holds pixel values from %g to %g, outside an IMAGE's 0..1; they are clamped to 0..1", name,
                    low, high)
    return images


def place(keyframes: Sequence[Keyframe], length: int) -> list[Placed]:
    """Resolve frame indices against a ``length``-frame clip; sorted by start.

    Raises when a keyframe runs outside the clip or two keyframes share a frame.
    """
    check_frames(length)
    placed = []
    for key in keyframes:
        check_images(key.images, key.name)
        start = key.frame + length if key.frame < 0 else key.frame
        stop = start + key.count
        if start < 0 or stop > length:
            raise KeyframeError(
                f"{key.name}: {key.count} image(s) from frame {key.frame} cover frames {start}..{stop - 1}, "
                f"outside the {length}-frame clip (frames 0..{length - 1}; -1 is the last frame). Move the "
                "keyframe, give fewer images or make the clip longer."
            )
        placed.append(Placed(start, stop, key.images, key.name))
    placed.sort(key=lambda p: p.start)
    for before, after in zip(placed, placed[1:]):
        if after.start < before.stop:
            raise KeyframeError(
                f"{before.name} (frames {before.start}..{before.stop - 1}) and {after.name} (frames "
                f"{after.start}..{after.stop - 1}) share frame {after.start}; each frame takes one image. Move "
                "one of them or give fewer images."
            )
    return placed


def known_flags(placed: Sequence[Placed], length: int) -> list[bool]:
    """Per-video-frame flags (True = a keyframe image is there), for the I2V mask."""
    flags = [False] * length
    for p in placed:
        flags[p.start:p.stop] = [True] * (p.stop - p.start)
    return flags


# ---------------------------------------------------------------------------- TI2V-5B


def latent_frame_of(frame: int) -> int:
    """The latent frame that stands for video frame ``frame`` (0 -> 0; 4j-3 .. 4j -> j)."""
    return 0 if frame == 0 else (frame + 3) // 4


def ti2v_latent_span(p: Placed) -> tuple[int, int]:
    """Latent frames ``[a, b)`` that keyframe ``p`` fills exactly, or a :class:`KeyframeError`.

    Latent frame 0 is video frame 0; latent frame j >= 1 is video frames 4j-3 .. 4j. A
    keyframe fills whole latent frames when it starts at 0 or at 4j-3 and stops after 4j
    (i.e. ``start`` is 0 or 1 mod 4 and ``stop`` is 1 mod 4).
    """
    starts_ok = p.start == 0 or p.start % 4 == 1
    stops_ok = p.stop % 4 == 1
    if not (starts_ok and stops_ok):
        raise KeyframeError(
            f"{p.name} covers video frames {p.start}..{p.stop - 1}, which do not fill whole latent frames. "
            "TI2V-5B keeps a latent frame as a whole (latent frame 0 is video frame 0; latent frame j >= 1 is "
            "video frames 4j-3..4j), so a keyframe must start at frame 0 or 4j-3 and end at frame 4j: e.g. "
            "1, 5 or 9 images from frame 0, 4 images from frame 1, 5 or 9, or one image at frame 0, 4, 8, ... "
            "(held over its latent frame's four frames)."
        )
    return latent_frame_of(p.start), latent_frame_of(p.stop - 1) + 1


def ti2v_hold_single(key: Keyframe, length: int) -> Keyframe:
    """A one-image keyframe at frame 4j (j >= 1) as four copies from frame 4j-3 (its latent frame).

    The last latent frame stands for the last four video frames, so an end image can only be
    kept as four frames of it. Other keyframes are returned unchanged.
    """
    if key.count != 1:
        return key
    frame = key.frame + length if key.frame < 0 else key.frame
    if frame <= 0 or frame % 4:
        return key
    return Keyframe(frame - 3, key.images.expand(4, *key.images.shape[1:]), key.name)


def ti2v_fill(placed: Sequence[Placed], length: int) -> list[tuple[int, int]]:
    """For each video frame, ``(keyframe index, image index)`` of the image the conditioning video shows.

    Known frames show their own image. An unknown frame shows the *next* keyframe's first
    image (the video holds still on what comes next), or the last keyframe's last image
    after the last keyframe. The causal encoder then sees each kept latent frame after a
    still of its own image rather than after a cut from gray; kept latent frames before
    any unknown frame (a start image, a continuation overlap) do not depend on the fill.
    """
    if not placed:
        raise KeyframeError("no keyframes to fill the conditioning video from")
    source: list = [None] * length
    for k, p in enumerate(placed):
        for f in range(p.start, p.stop):
            source[f] = (k, f - p.start)
    upcoming = (len(placed) - 1, placed[-1].stop - placed[-1].start - 1)
    for f in range(length - 1, -1, -1):
        if source[f] is None:
            source[f] = upcoming
        elif source[f][1] == 0:
            upcoming = source[f]
    return source


def ti2v_keep(placed: Sequence[Placed], length: int) -> tuple[list[int], int]:
    """Latent frames to keep, and how many video frames must be encoded to get them.

    The encoder is causal, so kept latent frames up to j need only video frames 0 .. 4j.
    """
    kept = []
    for p in placed:
        a, b = ti2v_latent_span(p)
        kept.extend(range(a, b))
    last = max(kept)
    return kept, (1 if last == 0 else 4 * last + 1)


# ---------------------------------------------------------------------------- continuation


def check_overlap(overlap: int, length: int, previous_frames: Optional[int] = None) -> int:
    """``overlap`` frames of a previous clip as the start of a ``length``-frame clip."""
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 1:
        raise KeyframeError(f"overlap must be a whole number of frames >= 1, got {overlap!r}")
    if overlap >= length:
        raise KeyframeError(
            f"overlap {overlap} leaves no new frame in a {length}-frame clip; use an overlap below {length} or a "
            "longer clip"
        )
    if previous_frames is not None and overlap > previous_frames:
        raise KeyframeError(
            f"overlap {overlap} is longer than the previous clip ({previous_frames} frames); use at most "
            f"{previous_frames}"
        )
    return overlap


def tail(clip: torch.Tensor, overlap: int) -> torch.Tensor:
    """The last ``overlap`` frames of an IMAGE clip ``[F, H, W, C]``."""
    return clip[clip.shape[0] - overlap:]


def join_clips(first: torch.Tensor, second: torch.Tensor, overlap: int) -> torch.Tensor:
    """``first`` followed by ``second`` without its first ``overlap`` frames: ``F1 + F2 - overlap`` frames.

    The overlap frames come from ``first`` (the frames the second clip was conditioned on);
    the frame after them is the second clip's first new frame.
    """
    check_images(first, "first clip")
    check_images(second, "second clip")
    if tuple(first.shape[1:]) != tuple(second.shape[1:]):
        a, b = tuple(first.shape[1:3]), tuple(second.shape[1:3])
        raise KeyframeError(
            f"the clips differ in size: first is {a[1]}x{a[0]} ({first.shape[-1]} channels), second {b[1]}x{b[0]} "
            f"({second.shape[-1]} channels); join clips decoded at the same width and height"
        )
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise KeyframeError(f"overlap must be a whole number of frames >= 0, got {overlap!r}")
    if overlap > first.shape[0]:
        raise KeyframeError(
            f"overlap {overlap} is longer than the first clip ({first.shape[0]} frames; second {second.shape[0]}); "
            f"use the overlap the second clip was made with"
        )
    if overlap >= second.shape[0]:
        raise KeyframeError(
            f"overlap {overlap} leaves no new frame of the second clip ({second.shape[0]} frames), so the join would "
            f"only repeat the first; use the overlap the second clip was made with (below {second.shape[0]})"
        )
    return torch.cat([first, second[overlap:].to(device=first.device, dtype=first.dtype)], dim=0)

