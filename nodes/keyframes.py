"""Keyframe and continuation nodes: first-last frame video, images at chosen frames, extending a clip.

I2V-A14B (``Wan22DuoI2VKeyframes``, ``Wan22DuoI2VExtend``) builds the same conditioning values
as ComfyUI's ``WanFirstLastFrameToVideo``: ``concat_latent_image`` is the Wan 2.1 VAE encoding of
a video that holds the keyframe images and mid-gray elsewhere, ``concat_mask`` ``[1, 4, T, h, w]``
is 0 on known video frames in the official layout (channel j of latent frame k is padded frame
4k + j, frame 0 padded three times). Either node feeds either sampler.

TI2V-5B (``Wan22DuoTI2VKeyframes``, ``Wan22DuoTI2VExtend``) keeps whole latent frames through a
LATENT ``noise_mask`` (0 = keep), as ``Wan22DuoTI2VLatent`` keeps its start frame; see
``engine/model/keyframes.py`` for which frames can be kept and how the conditioning video is filled.

``Wan22DuoJoinClips`` concatenates two decoded clips without repeating the overlap.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..engine.model import geometry
from ..engine.model.keyframes import (
    Keyframe, KeyframeError, check_images, check_overlap, join_clips, known_flags, place, tail, ti2v_fill,
    ti2v_hold_single, ti2v_keep,
)
from .inputs import keyframes as checked_keyframes, latent as checked_latent
from .samplers import MAX_LENGTH, _size_inputs, _zeros, center_crop_to_aspect, set_values, ti2v_frame
from .vae import Wan22DuoVAEDecode, encode_video, require_version

KEYFRAMES = "WAN22DUO_KEYFRAMES"
CATEGORY = "Wan22Duo/keyframes"


# ---------------------------------------------------------------- keyframe lists


def keyframe_list(start_image=None, end_image=None, keyframes=None, first: Optional[Keyframe] = None) -> list:
    """All keyframes of a node: ``first`` (an overlap), start, end, then the chained ones."""
    keys = [first] if first is not None else []
    if start_image is not None:
        keys.append(Keyframe(0, check_images(start_image, "start_image"), "start_image"))
    if end_image is not None:
        keys.append(Keyframe(-check_images(end_image, "end_image").shape[0], end_image, "end_image"))
    keys.extend(checked_keyframes(keyframes))
    if not keys:
        raise KeyframeError("no image given: connect start_image, end_image or keyframes (Wan22DuoKeyframe)")
    return keys


class Wan22DuoKeyframe:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Places an image (or several, on consecutive frames) at a chosen frame of the clip, for the keyframe "
        "inputs of the I2V/TI2V keyframe and extend nodes. Chain nodes to place several keyframes."
    )
    RETURN_TYPES = (KEYFRAMES,)
    RETURN_NAMES = ("keyframes",)
    OUTPUT_TOOLTIPS = ("This keyframe after the chained ones; connect to keyframes of a keyframe or extend node.",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The keyframe image; several images take consecutive frames."}),
                "frame": ("INT", {
                    "default": 40, "min": -MAX_LENGTH, "max": MAX_LENGTH - 1,
                    "tooltip": "Video frame of the (first) image, from 0. Negative counts from the end: -1 is the "
                               "last frame. TI2V-5B keeps whole latent frames: one image at frame 0 or a multiple "
                               "of 4 (held over frames 4j-3..4j), or groups of 4 images from frame 4j-3."}),
            },
            "optional": {
                "keyframes": (KEYFRAMES, {"tooltip": "Keyframes placed so far (another Wan22DuoKeyframe)."}),
            },
        }

    def add(self, image: torch.Tensor, frame: int = 40, keyframes=None):
        check_images(image, "image")
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise KeyframeError(f"frame must be a whole number (a video frame; -1 is the last), got {frame!r}")
        name = f"keyframe at frame {frame}"
        return (tuple(checked_keyframes(keyframes)) + (Keyframe(frame, image, name),),)


# ---------------------------------------------------------------- I2V-A14B


def fit_i2v(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE ``[n, H, W, C]`` -> ``[n, 3, height, width]`` in [-1, 1], fitted as ``samplers.i2v_video`` does.

    Center crop to the target aspect, then the official bicubic resize (no antialias, no clamp).
    """
    frames = images[:, :, :, :3].float().movedim(-1, 1) * 2.0 - 1.0
    frames = center_crop_to_aspect(frames, width, height)
    return F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False)


def i2v_keyframe_values(vae, keys: list, width: int, height: int, length: int, node: str) -> dict:
    """``concat_latent_image`` / ``concat_mask`` (ComfyUI convention, 0 = known) for the keyframes."""
    from ..engine.model.conditioning import official_i2v_mask

    require_version(vae, "2.1", node, "I2V-A14B")
    shape = geometry.latent_shape("a14b", length, height, width, 1)
    placed = place(keys, length)
    video = torch.zeros(1, 3, length, height, width, dtype=torch.float32)
    for p in placed:
        video[0, :, p.start:p.stop] = fit_i2v(p.images, width, height).movedim(0, 1)
    image_latent = encode_video(vae, video)
    known = official_i2v_mask(known_flags(placed, length), tuple(shape[-2:]))
    return {"concat_latent_image": image_latent, "concat_mask": (1.0 - known).to(image_latent.device)}


_I2V_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
_I2V_NAMES = ("positive", "negative", "latent")
_I2V_TIPS = (
    "Positive prompt with the keyframe conditioning (concat_latent_image, concat_mask).",
    "Negative prompt with the same conditioning.",
    "Empty 16-channel latent of the clip's size for Wan22DuoSampler.",
)
_TEXT_INPUTS = {
    "positive": ("CONDITIONING", {"tooltip": "Prompt from CLIPTextEncode (umT5-XXL)."}),
    "negative": ("CONDITIONING", {"tooltip": "Negative prompt from CLIPTextEncode (umT5-XXL)."}),
}
_KEYFRAME_INPUT = {"keyframes": (KEYFRAMES, {"tooltip": "Images at chosen frames (Wan22DuoKeyframe chain)."})}


class Wan22DuoI2VKeyframes:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "First-last-frame (and keyframe) conditioning for I2V-A14B: the start image, the end image and any "
        "chained keyframes are fitted to width x height (center crop, official bicubic resize), placed at their "
        "frames of a mid-gray video, encoded with the Wan 2.1 VAE, and the image latent and its per-frame mask "
        "(0 = known) are added to both prompts, the same layout as ComfyUI's WanFirstLastFrameToVideo. With only "
        "a start image it equals Wan22DuoI2VConditioning."
    )
    FUNCTION = "encode"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = _I2V_TYPES, _I2V_NAMES, _I2V_TIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_TEXT_INPUTS,
                "vae": ("WAN22DUO_VAE", {"tooltip": "The Wan 2.1 VAE (wan_2.1_vae.safetensors)."}),
                **_size_inputs(1280, 720, 81, 16),
            },
            "optional": {
                "start_image": ("IMAGE", {"tooltip": "First frame(s) of the video; several images fix several "
                                                     "first frames."}),
                "end_image": ("IMAGE", {"tooltip": "Last frame(s) of the video; several images fix the last "
                                                   "frames, in order."}),
                **_KEYFRAME_INPUT,
            },
        }

    def encode(self, positive, negative, vae, width: int = 1280, height: int = 720, length: int = 81,
               batch_size: int = 1, start_image=None, end_image=None, keyframes=None):
        shape = geometry.latent_shape("a14b", length, height, width, batch_size)
        keys = keyframe_list(start_image, end_image, keyframes)
        values = i2v_keyframe_values(vae, keys, width, height, length, "Wan22DuoI2VKeyframes")
        return set_values(positive, values), set_values(negative, values), {"samples": _zeros(shape)}


# ---------------------------------------------------------------- TI2V-5B


def ti2v_keyframe_latent(vae, keys: list, width: int, height: int, length: int, batch_size: int,
                         node: str) -> dict:
    """A TI2V-5B LATENT whose kept latent frames (noise_mask 0) hold the keyframes' encoding.

    The conditioning video (known frames, unknown ones showing the next keyframe) is encoded
    only as far as the last kept latent frame needs: the encoder is causal, so that prefix
    gives exactly the latent frames a full-length encode would.
    """
    require_version(vae, "2.2", node, "TI2V-5B")
    shape = geometry.latent_shape("ti2v_5b", length, height, width, batch_size)
    placed = place([ti2v_hold_single(k, length) for k in keys], length)
    kept, frames_needed = ti2v_keep(placed, length)
    fitted = [torch.cat([ti2v_frame(image, width, height) for image in p.images], dim=2) for p in placed]
    fill = ti2v_fill(placed, length)[:frames_needed]
    video = torch.cat([fitted[k][:, :, i:i + 1] for k, i in fill], dim=2)  # [1, 3, frames_needed, H, W]
    image_latent = encode_video(vae, video)
    samples = _zeros(shape)
    samples[:, :, kept] = image_latent[:, :, kept].to(samples.device)
    noise_mask = torch.ones(shape[0], 1, *shape[2:], dtype=torch.float32, device=samples.device)
    noise_mask[:, :, kept] = 0.0  # 0 = keep
    return {"samples": samples, "noise_mask": noise_mask}


_TI2V_TIPS = ("Raw 48-channel latent; noise_mask is 0 on the kept (keyframe) latent frames.",)


class Wan22DuoTI2VKeyframes:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "First-last-frame (and keyframe) latent for TI2V-5B. The Wan 2.2 VAE is causal with 4x time "
        "compression, so only whole latent frames can be kept: the start image is latent frame 0 (exactly as "
        "Wan22DuoTI2VLatent), an end image is held over the last four frames (the last latent frame). Kept frames "
        "get timestep 0 and stay bit-exact in the latent. The end image's pixels are not guaranteed: the causal "
        "decoder also reads the generated frames before the last latent frame."
    )
    FUNCTION = "generate"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = ("LATENT",), ("latent",), _TI2V_TIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("WAN22DUO_VAE", {"tooltip": "The Wan 2.2 VAE (wan2.2_vae.safetensors)."}),
                **_size_inputs(1280, 704, 121, 32),
            },
            "optional": {
                "start_image": ("IMAGE", {"tooltip": "First frame (1 image), or 1 + 4m first frames."}),
                "end_image": ("IMAGE", {"tooltip": "One image, held over the last 4 frames (the last latent frame), "
                                                   "or 4m images for the last 4m frames."}),
                **_KEYFRAME_INPUT,
            },
        }

    def generate(self, vae, width: int = 1280, height: int = 704, length: int = 121, batch_size: int = 1,
                 start_image=None, end_image=None, keyframes=None):
        keys = keyframe_list(start_image, end_image, keyframes)
        return (ti2v_keyframe_latent(vae, keys, width, height, length, batch_size, "Wan22DuoTI2VKeyframes"),)


# ---------------------------------------------------------------- continuation


def previous_clip(vae, previous_images, previous_latent, node: str) -> torch.Tensor:
    """The previous clip as IMAGE frames: given, or decoded from its latent (the whole clip, exactly)."""
    if (previous_images is None) == (previous_latent is None):
        raise KeyframeError(
            f"{node} needs the previous clip: connect previous_images (its decoded frames) or previous_latent "
            "(its latent, decoded here), not both"
        )
    if previous_images is not None:
        return check_images(previous_images, "previous_images")
    latent = checked_latent(previous_latent, "previous_latent")["samples"]
    if latent.ndim != 5 or latent.shape[0] != 1:
        raise KeyframeError(
            f"previous_latent must hold one video [1, C, T, h, w], got shape {tuple(latent.shape)}; extend one "
            "clip at a time"
        )
    # The decoder is causal over the whole clip, so its tail is decoded with the clip, not alone.
    (frames,) = Wan22DuoVAEDecode().decode(vae, {"samples": latent}, 0, 64)
    return frames


def previous_size(previous: torch.Tensor, family: str, node: str) -> tuple[int, int]:
    """The new clip's (height, width): the previous clip's, which must be a valid size for the model."""
    height, width = int(previous.shape[1]), int(previous.shape[2])
    try:
        geometry.check_size(width, height, family)
    except ValueError as exc:
        raise KeyframeError(
            f"{node}: the previous clip is {width}x{height}, not a size this model makes: {exc}") from None
    return height, width


def overlap_keyframe(previous: torch.Tensor, overlap: int, length: int) -> Keyframe:
    check_overlap(overlap, length, previous.shape[0])
    return Keyframe(0, tail(previous, overlap), f"the overlap (last {overlap} frames of the previous clip)")


_OVERLAP_TIP = ("The overlap this clip was made with: link it to Wan22DuoJoinClips' overlap, so the join always "
                "drops exactly the reused frames.")


def _extend_inputs(default_length: int, family_step: int, overlap_step: int) -> tuple[dict, dict]:
    required = {
        "vae": ("WAN22DUO_VAE", {"tooltip": "The model's VAE (also decodes previous_latent)."}),
        "length": ("INT", {"default": default_length, "min": 5, "max": MAX_LENGTH, "step": 4,
                           "tooltip": "Frames of the new clip, overlap included (4n+1)."}),
        "overlap": ("INT", {
            "default": 5, "min": 1, "max": MAX_LENGTH, "step": overlap_step,
            "tooltip": "Last frames of the previous clip given as the new clip's first frames. More shows the model "
                       "more of the motion to continue; each costs one new frame. Give Wan22DuoJoinClips the "
                       "same value."
                       + (" TI2V-5B: 1 + 4m (1, 5, 9, ...)." if overlap_step == 4 else "")}),
    }
    optional = {
        "previous_images": ("IMAGE", {"tooltip": "The previous clip's frames (Wan22DuoVAEDecode), same size "
                                                 f"(multiple of {family_step})."}),
        "previous_latent": ("LATENT", {"tooltip": "Or the previous clip's latent; it is decoded here (one "
                                                  "full decode)."}),
        "end_image": ("IMAGE", {"tooltip": "Optional last frame(s) of the new clip."}),
        **_KEYFRAME_INPUT,
    }
    return required, optional


class Wan22DuoI2VExtend:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Continues a clip with I2V-A14B: the last `overlap` frames of the previous clip become the first frames of "
        "a new clip of the same size (known frames in the I2V mask), optionally with an end image or keyframes. "
        "Sample it, decode it and join it to the previous clip with Wan22DuoJoinClips (link the overlap output to "
        "its overlap). Chain as often as you like."
    )
    FUNCTION = "extend"
    RETURN_TYPES = _I2V_TYPES + ("INT",)
    RETURN_NAMES = _I2V_NAMES + ("overlap",)
    OUTPUT_TOOLTIPS = _I2V_TIPS + (_OVERLAP_TIP,)

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = _extend_inputs(81, 16, 1)
        return {"required": {**_TEXT_INPUTS, **required}, "optional": optional}

    def extend(self, positive, negative, vae, length: int = 81, overlap: int = 5, previous_images=None,
               previous_latent=None, end_image=None, keyframes=None):
        node = "Wan22DuoI2VExtend"
        require_version(vae, "2.1", node, "I2V-A14B")
        previous = previous_clip(vae, previous_images, previous_latent, node)
        height, width = previous_size(previous, "a14b", node)
        shape = geometry.latent_shape("a14b", length, height, width, 1)
        keys = keyframe_list(None, end_image, keyframes, first=overlap_keyframe(previous, overlap, length))
        values = i2v_keyframe_values(vae, keys, width, height, length, node)
        return set_values(positive, values), set_values(negative, values), {"samples": _zeros(shape)}, overlap


class Wan22DuoTI2VExtend:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Continues a clip with TI2V-5B: the last `overlap` frames (1 + 4m) of the previous clip are encoded as the "
        "first latent frames of a new clip of the same size and kept (noise_mask 0), as the start image is. The "
        "new clip's first frames decode to the VAE round trip of those frames. Join with Wan22DuoJoinClips (link "
        "the overlap output to its overlap)."
    )
    FUNCTION = "extend"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = ("LATENT", "INT"), ("latent", "overlap"), _TI2V_TIPS + (_OVERLAP_TIP,)

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = _extend_inputs(121, 32, 4)
        return {"required": required, "optional": optional}

    def extend(self, vae, length: int = 121, overlap: int = 5, previous_images=None, previous_latent=None,
               end_image=None, keyframes=None):
        node = "Wan22DuoTI2VExtend"
        require_version(vae, "2.2", node, "TI2V-5B")
        if overlap < 1 or (overlap - 1) % 4:
            below = max(1, (overlap - 1) // 4 * 4 + 1)
            raise KeyframeError(
                f"TI2V-5B keeps whole latent frames, so the overlap must be 1 + 4m frames (1, 5, 9, ...); got "
                f"{overlap}. Use {below} or {below + 4}."
            )
        previous = previous_clip(vae, previous_images, previous_latent, node)
        height, width = previous_size(previous, "ti2v_5b", node)
        keys = keyframe_list(None, end_image, keyframes, first=overlap_keyframe(previous, overlap, length))
        return ti2v_keyframe_latent(vae, keys, width, height, length, 1, node), overlap


class Wan22DuoJoinClips:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Joins two decoded clips, the second made by an extend node from the first, without repeating the "
        "overlap: the result has len(first) + len(second) - overlap frames; the overlap frames come from the "
        "first clip. Join the result to a third clip to chain further."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The joined frames; feed CreateVideo / SaveVideo or the next extend node.",)
    FUNCTION = "join"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "first": ("IMAGE", {"tooltip": "The earlier clip (or an earlier join)."}),
                "second": ("IMAGE", {"tooltip": "The clip that continues it (Wan22DuoI2VExtend / "
                                                "Wan22DuoTI2VExtend, decoded)."}),
                "overlap": ("INT", {"default": 5, "min": 0, "max": MAX_LENGTH,
                                    "tooltip": "The overlap the second clip was made with; its first `overlap` "
                                               "frames are dropped. 0 joins end to end. Link the extend node's "
                                               "overlap output here so the two cannot disagree."}),
            }
        }

    def join(self, first: torch.Tensor, second: torch.Tensor, overlap: int = 5):
        return (join_clips(first, second, overlap),)


NODE_CLASS_MAPPINGS = {
    "Wan22DuoKeyframe": Wan22DuoKeyframe,
    "Wan22DuoI2VKeyframes": Wan22DuoI2VKeyframes,
    "Wan22DuoTI2VKeyframes": Wan22DuoTI2VKeyframes,
    "Wan22DuoI2VExtend": Wan22DuoI2VExtend,
    "Wan22DuoTI2VExtend": Wan22DuoTI2VExtend,
    "Wan22DuoJoinClips": Wan22DuoJoinClips,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Wan22DuoKeyframe": "Wan 2.2 Duo Keyframe (image at a frame)",
    "Wan22DuoI2VKeyframes": "Wan 2.2 Duo I2V First-Last Frame / Keyframes (I2V-A14B)",
    "Wan22DuoTI2VKeyframes": "Wan 2.2 Duo TI2V First-Last Frame / Keyframes (TI2V-5B)",
    "Wan22DuoI2VExtend": "Wan 2.2 Duo I2V Extend Clip (I2V-A14B)",
    "Wan22DuoTI2VExtend": "Wan 2.2 Duo TI2V Extend Clip (TI2V-5B)",
    "Wan22DuoJoinClips": "Wan 2.2 Duo Join Clips (drop the overlap)",
}
