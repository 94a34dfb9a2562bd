"""Long video to disk: decode each clip straight to an on-disk frame store, save the store as a video file.

The IMAGE route (``Wan22DuoVAEDecode`` -> ``Wan22DuoColorMatch`` -> ``Wan22DuoJoinClips`` ->
``CreateVideo`` / ``SaveVideo``) hands every clip, matched copy and join over as a float32 IMAGE,
and ComfyUI's cache keeps them all: 10 chained 81-frame 832x480 clips hold about 25 GiB of RAM
(``bench/results_drift.md``). This route keeps the video off the RAM:

* ``Wan22DuoVAEDecodeToDisk`` decodes a LATENT one latent frame at a time (``WanVAE.decode_stream``,
  the computation ``Wan22DuoVAEDecode`` does, bit for bit) and writes each frame as 8-bit RGB to a
  new segment file in ComfyUI's temp folder, dropping the first ``overlap`` frames (the ones a
  continuation repeats). Given ``previous_frames`` it returns a new store with its segment appended
  (the previous store is never changed, so ComfyUI's cache stays valid). It also returns the clip's
  last ``tail_frames`` frames as a small IMAGE for the image-route extend node. Optional colour match
  to the anchor image (``Wan22DuoColorMatch``'s anchor mode, which the drift table shows does not
  compound): the clip's colour statistics are gathered while it is decoded and its float frames go to a
  temporary spool file, then the one transform is applied on the way to the segment.
* ``Wan22DuoSaveVideoFromDisk`` encodes the store as an H.264 MP4 in ComfyUI's output folder, one frame
  at a time, and shows it in the UI like ``SaveVideo``.

The file format, its strict checks and the video writer are ``engine/memory/frames.py``.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Optional

import torch

from . import _comfy
from .keyframes import CATEGORY
from .samplers import MAX_LENGTH
from .vae import MAX_TILE, acquire, decode_setup, release_gpu, video_to_images
from ..engine.memory.frames import FrameStore, FrameStoreError, SegmentWriter, write_video
from ..engine.model.colour import SPACES, ColourTransform, RunningStats, channel_stats
from ..engine.model.geometry import pixel_frames
from ..engine.model.keyframes import check_images

FRAMES = "WAN22DUO_FRAMES"
STORE_FOLDER = "wan22duo_frames"
DECODE = "Wan22DuoVAEDecodeToDisk"
SAVE = "Wan22DuoSaveVideoFromDisk"


def store_folder() -> Path:
    """Where segments go: ``wan22duo_frames`` in ComfyUI's temp folder (emptied when ComfyUI starts)."""
    return Path(_comfy.temp_directory()) / STORE_FOLDER


def _whole(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{DECODE}: {name} must be a whole number >= {low}, got {value!r}")
    return value


class _Tail:
    """The last ``n`` frames seen (float IMAGE frames), kept while the rest goes to disk."""

    def __init__(self, n: int):
        self.n, self.frames = n, None

    def add(self, images: torch.Tensor) -> None:
        joined = images if self.frames is None else torch.cat([self.frames, images])
        self.frames = joined[max(0, joined.shape[0] - self.n):].clone()


def decode_to_store(module, latent: torch.Tensor, tiling, folder: Path, overlap: int = 0, tail: int = 5,
                    colour: Optional[ColourTransform] = None, space: str = "lab", progress=None):
    """Decode ``latent`` ``[1, C, T, h, w]`` with the VAE ``module`` into a new segment in ``folder``.

    Returns ``(segment, last frames)``: the segment holds the clip's frames after its first ``overlap``;
    the last ``tail`` frames come back as float IMAGE frames (matched, when colour matching).
    ``colour``: a transform factory ``(clip stats) -> ColourTransform`` (see :func:`anchor_match`); the
    clip's statistics are gathered over all its frames while they are decoded, the float frames wait in
    a spool file next to the segment, and the transform is applied on the way to the segment.
    """
    frames = pixel_frames(latent.shape[2])
    height, width = latent.shape[3] * module.spatial_stride, latent.shape[4] * module.spatial_stride
    last = _Tail(tail)
    stream = module.decode_stream(latent, tiling=tiling, output_device="cpu", progress=progress)
    with SegmentWriter(folder, width, height, frames - overlap) as writer:
        if colour is None:
            for first, chunk in stream:
                images = video_to_images(chunk)
                last.add(images)
                writer.write(images[max(0, overlap - first):])
        else:
            _write_matched(stream, writer, colour, space, overlap, last)
        return writer.finish(), last.frames


def _write_matched(stream, writer: SegmentWriter, colour, space: str, overlap: int, last: _Tail) -> None:
    stats = RunningStats(space)
    spool = writer.path.with_name(f"{uuid.uuid4().hex}.f32.part")
    chunks = []
    try:
        with open(spool, "wb") as f:
            for first, chunk in stream:
                images = video_to_images(chunk)
                stats.add(images)
                f.write(images.contiguous().numpy().tobytes())
                chunks.append((first, images.shape[0]))
        transform = colour(stats.stats())
        frame_bytes = writer.width * writer.height * 3 * 4
        with open(spool, "rb") as f:
            for first, n in chunks:
                data = bytearray(f.read(n * frame_bytes))
                images = torch.frombuffer(data, dtype=torch.float32).view(n, writer.height, writer.width, 3)
                matched = transform(images)
                last.add(matched)
                writer.write(matched[max(0, overlap - first):])
    finally:
        spool.unlink(missing_ok=True)


def anchor_match(anchor: torch.Tensor, space: str, strength: float):
    """The colour transform factory of ``Wan22DuoColorMatch``'s anchor mode: a clip's statistics to the anchor's."""
    reference = channel_stats(anchor.detach().cpu(), space)
    return lambda clip_stats: ColourTransform(clip_stats, reference, space, strength)


class Wan22DuoVAEDecodeToDisk:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "For long videos: decodes a clip one latent frame at a time and writes its frames (8-bit) straight to a "
        "file in ComfyUI's temp folder instead of returning them as an IMAGE, so a chained video never sits in "
        "RAM. Link the previous clip's frames to previous_frames and the extend node's overlap to overlap: the "
        "repeated frames are dropped and this clip is appended. Save the result with Wan 2.2 Duo Save Video "
        "(from disk frames). last_images (the clip's last frames) feeds Wan22DuoI2VExtend's previous_images."
    )
    RETURN_TYPES = (FRAMES, "IMAGE")
    RETURN_NAMES = ("frames", "last_images")
    OUTPUT_TOOLTIPS = (
        "The video so far on disk (previous_frames plus this clip without its overlap); feed the next clip's "
        "previous_frames or Wan 2.2 Duo Save Video (from disk frames).",
        "This clip's last tail_frames frames as an IMAGE (colour-matched when colour_match is on), for an image "
        "extend node's previous_images.",
    )
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("WAN22DUO_VAE", {"tooltip": "The VAE matching the model: Wan 2.1 for A14B, Wan 2.2 for "
                                                    "TI2V-5B."}),
                "samples": ("LATENT", {"tooltip": "One clip's latent (its sampler's output); one video, batch 1."}),
                "tile_size": ("INT", {
                    "default": 0, "min": 0, "max": MAX_TILE, "step": 32,
                    "tooltip": "Spatial tile size in pixels; 0 decodes whole frames. As Wan22DuoVAEDecode."}),
                "tile_overlap": ("INT", {
                    "default": 64, "min": 0, "max": MAX_TILE, "step": 16,
                    "tooltip": "Pixels neighbouring tiles share and blend. Ignored when tile_size is 0."}),
            },
            "optional": {
                "previous_frames": (FRAMES, {"tooltip": "The video so far (the previous clip's frames output). "
                                                        "Leave empty for the first clip."}),
                "overlap": ("INT", {"default": 0, "min": 0, "max": MAX_LENGTH,
                                    "tooltip": "Frames at the start of this clip that repeat the video so far; they "
                                               "are not written. Link the extend node's overlap output. 0 for the "
                                               "first clip."}),
                "tail_frames": ("INT", {"default": 5, "min": 1, "max": MAX_LENGTH,
                                        "tooltip": "How many of the clip's last frames last_images holds (at least "
                                                   "the next extend node's overlap)."}),
                "colour_match": (["off", "anchor"], {
                    "tooltip": "anchor: give the clip the colour statistics of anchor_image (Lab or YCbCr mean "
                               "and spread, one transform for the whole clip), as Wan22DuoColorMatch's anchor "
                               "mode; against the drift of long chains."}),
                "anchor_image": ("IMAGE", {"tooltip": "The image every clip is matched to (usually the first "
                                                      "clip's start image); needed when colour_match is anchor."}),
                "colour_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                              "tooltip": "0 leaves the clip unchanged, 1 matches fully."}),
                "colour_space": (list(SPACES), {"tooltip": "lab: lightness and two colour axes; ycbcr: luma and "
                                                           "chroma."}),
                "auto_tile": ("BOOLEAN", {"default": False,
                                          "tooltip": "Pick tile_size for you from the free GPU memory."}),
            },
        }

    def decode(self, vae, samples: dict, tile_size: int = 0, tile_overlap: int = 64, previous_frames=None,
               overlap: int = 0, tail_frames: int = 5, colour_match: str = "off", anchor_image=None,
               colour_strength: float = 1.0, colour_space: str = "lab", auto_tile: Optional[bool] = None):
        latent, tiling, frame_hw = decode_setup(vae, samples, tile_size, tile_overlap, auto_tile, output_on_vae=False)
        overlap, tail_frames = _whole(overlap, "overlap", 0), _whole(tail_frames, "tail_frames", 1)
        if latent.shape[0] != 1:
            raise ValueError(f"{DECODE}: samples holds {latent.shape[0]} videos; a frame store is one video. Decode "
                             "a batch with Wan22DuoVAEDecode, or sample one video per clip")
        frames = pixel_frames(latent.shape[2])
        stride = 8 if vae.info["version"] == "2.1" else 16
        height, width = latent.shape[3] * stride, latent.shape[4] * stride
        if overlap > frames:
            raise ValueError(f"{DECODE}: overlap {overlap} is longer than the clip ({frames} frames); link the "
                             "extend node's overlap output")
        if previous_frames is None and overlap:
            raise ValueError(f"{DECODE}: overlap is {overlap} but previous_frames is empty, so there is nothing the "
                             "clip repeats; link the previous clip's frames output, or set overlap to 0")
        if previous_frames is not None:
            if not isinstance(previous_frames, FrameStore):
                raise ValueError(f"{DECODE}: previous_frames must be a {FRAMES} from {DECODE}, got "
                                 f"{type(previous_frames).__name__}")
            if (previous_frames.width, previous_frames.height) != (width, height):
                raise FrameStoreError(
                    f"{DECODE}: this clip is {width}x{height} but previous_frames is {previous_frames.width}x"
                    f"{previous_frames.height}; every clip of one video must have the same size")
            previous_frames.check()
        colour = None
        if colour_match == "anchor":
            if anchor_image is None:
                raise ValueError(f"{DECODE}: colour_match is 'anchor' but anchor_image is not connected; connect "
                                 "the anchor (first) image or set colour_match to off")
            colour = anchor_match(check_images(anchor_image, "anchor_image"), colour_space, colour_strength)
        elif colour_match != "off":
            raise ValueError(f"{DECODE}: colour_match must be 'off' or 'anchor', got {colour_match!r}")
        progress = _comfy.Progress(latent.shape[2])
        module = acquire(vae, frame_hw)
        try:
            segment, last = decode_to_store(module, latent, tiling, store_folder(), overlap, tail_frames, colour,
                                            colour_space, progress.absolute)
        finally:
            del module
            release_gpu(vae)
        store = previous_frames if previous_frames is not None else FrameStore(width, height)
        return store.appended(segment), last.to(_comfy.intermediate_device())


class Wan22DuoSaveVideoFromDisk:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Saves a long video from Wan 2.2 Duo VAE Decode to Disk as an H.264 MP4 in ComfyUI's output folder, "
        "reading one frame at a time, so the video never sits in RAM. A failed save leaves no partial file."
    )
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": (FRAMES, {"tooltip": "The video on disk: the last Wan 2.2 Duo VAE Decode to Disk's frames."}),
                "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                  "tooltip": "Frames per second: 16 for A14B, 24 for TI2V-5B."}),
                "filename_prefix": ("STRING", {"default": "video/Wan22Duo_long",
                                               "tooltip": "Path and name in ComfyUI's output folder; a counter is "
                                                          "appended, as with SaveVideo."}),
            },
            "optional": {
                "crf": ("INT", {"default": 19, "min": 0, "max": 51,
                                "tooltip": "H.264 quality (libx264 CRF): lower is better and larger; 19 is near "
                                           "transparent."}),
            },
        }

    def save(self, frames, fps: float = 16.0, filename_prefix: str = "video/Wan22Duo_long", crf: int = 19):
        if not isinstance(frames, FrameStore):
            raise ValueError(f"{SAVE}: frames must be a {FRAMES} from {DECODE}, got {type(frames).__name__}")
        folder, stem, subfolder = _comfy.save_path(filename_prefix, frames.width, frames.height)
        name = f"{stem}.mp4"
        write_video(frames, os.path.join(folder, name), float(fps), int(crf))
        _comfy.log.info("%s: wrote %d frames (%dx%d) to %s", SAVE, frames.frames, frames.width, frames.height,
                        os.path.join(folder, name))
        return {"ui": {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
                       "animated": (True,)}}


NODE_CLASS_MAPPINGS = {
    DECODE: Wan22DuoVAEDecodeToDisk,
    SAVE: Wan22DuoSaveVideoFromDisk,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    DECODE: "Wan 2.2 Duo VAE Decode to Disk (long video)",
    SAVE: "Wan 2.2 Duo Save Video (from disk frames)",
}
