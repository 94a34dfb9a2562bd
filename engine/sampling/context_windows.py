"""Context windows: denoise a video longer than the model's clip in overlapping windows of latent frames.

An option of the one loop (``loop.sample(..., windows=ContextWindows(...))``), not a second
loop. At every step the loop asks :meth:`ContextWindows.windows` for the windows of that
step, calls the model (guidance included) on each window's frames only, and fuses the
windows' velocities frame by frame with weights that sum to 1 on every latent frame
(:meth:`ContextWindows.weights`). The solver then takes one step on the whole latent, so
the schedule, the solver history, the expert switch, the step cache and the TI2V hold act on
the whole video as without windows. Both experts (and leading phases) get the same windows:
they depend on the step index only.

* **Length and overlap** are given in video frames on the node and converted here to
  latent frames with the VAEs' temporal stride of 4 (frame 0 alone, then 4 per latent
  frame): a window of ``f`` frames is ``(f - 1) // 4 + 1`` latent frames, an overlap of
  ``o`` frames is ``o // 4`` latent frames (rounded down, as ComfyUI 0.33's
  ``WanContextWindowsManual``: an overlap is never larger than asked).
* **Schedules.** ``static``: windows start at ``0, d, 2d, ...`` (``d = length - overlap``),
  the last one moved back to end on the last frame; the same windows every step.
  ``uniform``: the same spacing shifted at each step by ``floor(p_i * d)`` frames, where
  ``p_i`` is the van der Corput sequence (0, 1/2, 1/4, 3/4, ...; ComfyUI's
  ``ordered_halving``), and windows cut by the video's ends moved inside it. So the seams
  move from step to step and no frame is a seam at every step; step 0 equals ``static``.
  Windows never wrap around the end (no looped schedule: a Wan clip has a start and an end).
* **Fuse.** ``pyramid``: weight ``min(j + 1, length - j)`` at position ``j`` of a window
  (FreeNoise's weighted average, as ComfyUI's ``pyramid``). ``overlap_linear``: weight 1
  except on the frames a window shares with its neighbour, where the two windows cross-fade
  linearly (``(j + 1) / (n + 1)`` in, ``(n - j) / (n + 1)`` out over ``n`` shared frames;
  the two sum to 1 on each shared frame, and no weight is 0). ``flat``: plain mean.
* **Causal anchor.** Latent frame 0 of a Wan clip is special: the causal VAE encodes one
  video frame into it, and four into every later one, so the model treats a window's first
  frame as a clip start. A window that starts at ``s > 0`` is therefore given frame
  ``s - 1`` in front as context (its latent, its I2V channels, its TI2V mask); the model
  runs on ``length + 1`` frames and its output for the anchor is dropped. This is what
  ComfyUI 0.33's ``causal_window_fix`` does for ``WanContextWindowsManual``.
* **FreeNoise** (Qiu et al. 2023, "FreeNoise: Tuning-Free Longer Video Diffusion via Noise
  Rescheduling"): the initial noise of frames past the first window repeats the noise one
  window length earlier, shuffled in blocks of ``d`` frames by a generator seeded with the
  run's seed. Every window then starts from a permutation of the first window's noise, which
  keeps the windows' content consistent. Deterministic per seed; a video no longer than one
  window is left untouched.
* **Conditioning** is sliced with the frames: the I2V channels (mask and image latent) and
  the TI2V noise mask (hence the per-token timesteps) of a window are those of its frames,
  so a start image conditions only the windows that contain frame 0, unless
  ``retain_first_frame`` is on: then every later window's first model frame (its anchor, or
  its own first frame without one) gets frame 0's I2V channels, i.e. the start image marked as
  known, as ComfyUI 0.33's ``retain_first_frame`` (``cond_retain_index_list`` "0") does. Its
  latent is still the window's own; only the conditioning is the start image. Without it, an
  I2V window far from the start sees no image at all and drifts freely (on the toy the
  background changes colour: bench/results_drift.md). I2V-A14B only: T2V has no such channels
  and TI2V-5B keeps its image in the latent, so there it changes nothing (the loop says so).
  The text applies to every window.
* **Memory.** The model never sees more than ``length`` (+1 with the anchor) latent frames,
  so the activation estimate and ``gpu_budget``'s auto budget count one window
  (:meth:`ContextWindows.model_frames`).

A video no longer than one window runs exactly as without windows, bit for bit (nothing in
this module acts on it). TI2V-5B runs with windows but the loop warns: see
:data:`TI2V_WARNING`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import public

TEMPORAL_STRIDE = 4  # video frames per latent frame after the first (Wan 2.1 and Wan 2.2 VAEs)
SCHEDULES = ("uniform", "static")
FUSES = ("pyramid", "overlap_linear", "flat")
TI2V_WARNING = (
    "context windows on TI2V-5B: allowed, but users report that the 5B model does not work well with windows "
    "(seams and drift; not measured here). For long TI2V-5B videos prefer Wan22DuoTI2VExtend, which continues "
    "from the previous clip's last frames"
)


@public
class ContextWindowError(ValueError):
    """Context-window settings that cannot work; the message names the value and how to fix it."""


def latent_length(video_frames: int) -> int:
    """Latent frames of a window of ``video_frames`` video frames: ``(f - 1) // 4 + 1``."""
    return (int(video_frames) - 1) // TEMPORAL_STRIDE + 1


def latent_overlap(video_frames: int) -> int:
    """Latent frames of an overlap of ``video_frames`` video frames, rounded down: ``o // 4``."""
    return int(video_frames) // TEMPORAL_STRIDE


def van_der_corput(i: int) -> float:
    """The base-2 radical inverse of ``i``: 0, 1/2, 1/4, 3/4, 1/8, ... (the bits of ``i`` mirrored)."""
    value, scale = 0.0, 0.5
    while i:
        if i & 1:
            value += scale
        scale /= 2
        i >>= 1
    return value


@dataclass(frozen=True)
class Window:
    """One window of one step: its latent frames (consecutive), the anchor frame in front, if any, and
    whether its first model frame takes frame 0's conditioning (``retain_first_frame``)."""

    start: int
    stop: int
    anchor: Optional[int] = None
    retain_first: bool = False

    @property
    def frames(self) -> list[int]:
        return list(range(self.start, self.stop))

    @property
    def model_frames(self) -> list[int]:
        """The frames the model is fed: the anchor first, then the window's own."""
        return ([] if self.anchor is None else [self.anchor]) + self.frames

    @property
    def cond_frames(self) -> list[int]:
        """The frames whose I2V channels the model is fed: ``model_frames``, the first replaced by frame 0
        when the window retains the start frame."""
        frames = self.model_frames
        return [0] + frames[1:] if self.retain_first else frames


@dataclass(frozen=True)
class ContextWindows:
    """Context-window settings in latent frames (see the module doc); build from video frames with
    :meth:`from_video_frames`."""

    length: int
    overlap: int
    schedule: str = "uniform"
    fuse: str = "pyramid"
    causal_anchor: bool = True
    freenoise: bool = True
    retain_first_frame: bool = False

    def __post_init__(self):
        where = "engine/sampling/context_windows.py (Wan22DuoContextWindows)"
        if self.schedule not in SCHEDULES:
            raise ContextWindowError(f"context window schedule {self.schedule!r} is unknown ({where}); expected one "
                                     f"of {SCHEDULES}")
        if self.fuse not in FUSES:
            raise ContextWindowError(f"context window fuse {self.fuse!r} is unknown ({where}); expected one of {FUSES}")
        if int(self.length) < 2:
            raise ContextWindowError(
                f"a context window of {self.length} latent frame(s) is too short ({where}); it needs at least 2 "
                "latent frames (5 video frames). Use 81 video frames, the length Wan 2.2 A14B was trained on.")
        if not 0 <= int(self.overlap) < int(self.length):
            raise ContextWindowError(
                f"context overlap of {self.overlap} latent frames with windows of {self.length} ({where}): the overlap "
                f"must be at least 0 and smaller than the window, so that windows advance. Lower the overlap "
                f"(in video frames, below {4 * (self.length - 1) + 1}).")

    @classmethod
    def from_video_frames(cls, length: int, overlap: int, **options) -> "ContextWindows":
        """Settings from a window length and overlap in video frames (the node's units)."""
        if int(length) < 1 or (int(length) - 1) % TEMPORAL_STRIDE:
            raise ContextWindowError(
                f"context_length {length} is not a Wan clip length: it must be 4n+1 video frames (5, ..., 81, ...), "
                "one latent frame for the first video frame and one per 4 after it. Set it on Wan22DuoContextWindows.")
        if int(overlap) < 0:
            raise ContextWindowError(f"context_overlap {overlap} is negative; set it to 0 or more video frames on "
                                     "Wan22DuoContextWindows.")
        return cls(latent_length(length), latent_overlap(overlap), **options)

    @property
    def stride(self) -> int:
        return self.length - self.overlap

    def active(self, frames: int) -> bool:
        """Whether a latent of ``frames`` latent frames is split at all (longer than one window)."""
        return frames > self.length

    def model_frames(self, frames: int) -> int:
        """The most latent frames one model call sees: the memory estimate's frame count."""
        if not self.active(frames):
            return frames
        return self.length + (1 if self.causal_anchor else 0)

    def describe(self) -> dict:
        return {"length": self.length, "overlap": self.overlap, "schedule": self.schedule, "fuse": self.fuse,
                "causal_anchor": self.causal_anchor, "freenoise": self.freenoise,
                "retain_first_frame": self.retain_first_frame}

    # ------------------------------------------------------------ windows
    def starts(self, frames: int, step: int) -> list[int]:
        """The first latent frame of each window at ``step``, ascending, covering ``[0, frames)``."""
        if not self.active(frames):
            return [0]
        last, d = frames - self.length, self.stride
        shift = int(van_der_corput(step) * d) if self.schedule == "uniform" else 0
        out: list[int] = []
        s = shift - d if shift > 0 else 0
        while True:
            start = min(max(s, 0), last)
            if not out or start != out[-1]:
                out.append(start)
            if start == last:
                return out
            s += d

    def windows(self, frames: int, step: int) -> list[Window]:
        """The windows of ``step`` (each with its causal anchor when that is on)."""
        if not self.active(frames):
            return [Window(0, frames)]
        return [Window(s, s + self.length, s - 1 if self.causal_anchor and s > 0 else None,
                       retain_first=self.retain_first_frame and s > 0)
                for s in self.starts(frames, step)]

    def weights(self, windows: list[Window], frames: int) -> list[torch.Tensor]:
        """Per window, one float32 weight per frame of it; over all windows they sum to 1 on every frame."""
        raw = []
        for k, w in enumerate(windows):
            n = w.stop - w.start
            j = torch.arange(n, dtype=torch.float64)
            if self.fuse == "pyramid":
                weight = torch.minimum(j + 1, n - j)
            elif self.fuse == "flat":
                weight = torch.ones(n, dtype=torch.float64)
            else:  # overlap_linear: cross-fade over the frames shared with each neighbour
                weight = torch.ones(n, dtype=torch.float64)
                left = windows[k - 1].stop - w.start if k > 0 else 0
                right = w.stop - windows[k + 1].start if k + 1 < len(windows) else 0
                if left > 0:
                    weight[:left] *= (torch.arange(left, dtype=torch.float64) + 1) / (left + 1)
                if right > 0:
                    weight[n - right:] *= (right - torch.arange(right, dtype=torch.float64)) / (right + 1)
            raw.append(weight)
        total = torch.zeros(frames, dtype=torch.float64)
        for w, weight in zip(windows, raw):
            total[w.start:w.stop] += weight
        if bool((total <= 0).any()):
            missing = [int(f) for f in torch.nonzero(total <= 0).flatten()]
            raise ContextWindowError(f"context windows leave latent frames {missing} of {frames} uncovered")
        return [(weight / total[w.start:w.stop]).float() for w, weight in zip(windows, raw)]

    # ------------------------------------------------------------ noise
    def initial_noise(self, noise: torch.Tensor, seed: int) -> torch.Tensor:
        """FreeNoise on ``[B, C, T, h, w]`` noise (a new tensor; the input is not changed). Off, or a video no
        longer than one window: the noise itself."""
        frames = noise.shape[2]
        if not self.freenoise or not self.active(frames):
            return noise
        generator = torch.Generator(device="cpu")
        generator.manual_seed(int(seed))
        out = noise.clone()
        for place in range(self.length, frames, self.stride):
            n = min(self.stride, frames - place)
            source = torch.randperm(n, generator=generator) + (place - self.length)
            out[:, :, place:place + n] = out[:, :, source.to(out.device)]
        return out

    # ------------------------------------------------------------ the model call
    def fuse_velocity(self, step: int, call: Callable[[list[int]], torch.Tensor], shape, device) -> torch.Tensor:
        """The step's velocity of the whole latent (``shape`` ``[B, C, T, h, w]``, float32 on ``device``) from
        one ``call(model_frames, cond_frames)`` per window, which returns the velocity of ``model_frames`` (anchor
        first) with the I2V channels of ``cond_frames`` (:attr:`Window.cond_frames`)."""
        frames = shape[2]
        windows = self.windows(frames, step)
        fused = torch.zeros(tuple(shape), dtype=torch.float32, device=device)
        for window, weight in zip(windows, self.weights(windows, frames)):
            v = call(window.model_frames, window.cond_frames)
            if window.anchor is not None:
                v = v[:, :, 1:]
            fused[:, :, window.start:window.stop] += v.to(fused.device) * weight.to(fused.device).view(1, 1, -1, 1, 1)
        return fused
