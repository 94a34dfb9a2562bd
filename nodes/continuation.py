"""Long-video continuation nodes: the SVI 2.0 Pro latent layout, and colour match against drift.

``Wan22DuoI2VExtendSVI`` builds the I2V-A14B conditioning that the Stable Video Infinity 2.0 Pro
LoRAs expect (``engine/model/continuation.py``): the anchor image encoded alone, the previous clip's
last latent frames taken from its LATENT (no VAE round trip), zeros, and a mask on the anchor only.
``Wan22DuoColorMatch`` gives a decoded clip the colour statistics of the anchor image or of the
frames it shares with the previous clip (``engine/model/colour.py``).
"""
from __future__ import annotations

import torch

from ..engine.model import geometry
from ..engine.model.colour import SPACES, match_colour, overlap_frames
from ..engine.model.continuation import MOTION_LATENTS_DEFAULT, ContinuationError, svi_layout, svi_overlap
from ..engine.model.keyframes import check_images
from .inputs import latent as checked_latent
from .keyframes import CATEGORY, _I2V_NAMES, _I2V_TIPS, _I2V_TYPES, _TEXT_INPUTS, fit_i2v
from .samplers import MAX_LENGTH, MAX_RESOLUTION, _zeros, set_values
from .vae import encode_video, require_version

NODE = "Wan22DuoI2VExtendSVI"


def encode_anchor(vae, anchor_image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The anchor image fitted as a start image is (center crop, bicubic) and encoded alone: ``[1, 16, 1, h, w]``."""
    images = check_images(anchor_image, "anchor_image")
    if images.shape[0] != 1:
        raise ContinuationError(
            f"{NODE}: anchor_image must be one image (it is encoded alone as latent frame 0), got {images.shape[0]} "
            "frames; pick one with an image-batch node (e.g. the first frame of the first clip)")
    video = fit_i2v(images, width, height).movedim(0, 1).unsqueeze(0)  # [1, 3, 1, H, W]
    return encode_video(vae, video)


class Wan22DuoI2VExtendSVI:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Conditioning for I2V-A14B in the SVI 2.0 Pro layout (Stable Video Infinity LoRAs): latent frame 0 is the "
        "anchor image encoded alone, the next motion_latents frames are the last latent frames of the previous "
        "clip taken straight from its LATENT (no decode and re-encode), the rest is zeros, and only the anchor "
        "frame is marked known. Without previous_latent it makes a first clip (anchor + zeros). Load the SVI "
        "high- and low-noise LoRAs on the two experts. Decode each clip and join it with Wan22DuoJoinClips, "
        "linking the overlap output (1 + 4 x motion_latents frames)."
    )
    FUNCTION = "extend"
    RETURN_TYPES = _I2V_TYPES + ("INT",)
    RETURN_NAMES = _I2V_NAMES + ("overlap",)
    OUTPUT_TOOLTIPS = _I2V_TIPS + (
        "Frames to drop from this clip when joining it to the previous one: 1 + 4 x motion_latents (the anchor's "
        "frame and the frames that repeat the previous clip's end); 0 for a first clip. Link it to "
        "Wan22DuoJoinClips' overlap.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_TEXT_INPUTS,
                "vae": ("WAN22DUO_VAE", {"tooltip": "The Wan 2.1 VAE (wan_2.1_vae.safetensors); encodes the anchor."}),
                "anchor_image": ("IMAGE", {"tooltip": "One image every clip of the video is anchored to (usually the "
                                                      "first clip's start image); the same for every clip."}),
                "width": ("INT", {"default": 832, "min": 16, "max": MAX_RESOLUTION, "step": 16,
                                  "tooltip": "Video width in pixels, a multiple of 16; the previous clip's width."}),
                "height": ("INT", {"default": 480, "min": 16, "max": MAX_RESOLUTION, "step": 16,
                                   "tooltip": "Video height in pixels, a multiple of 16; the previous clip's height."}),
                "length": ("INT", {"default": 81, "min": 1, "max": MAX_LENGTH, "step": 4,
                                   "tooltip": "Frames of this clip (4n+1), the reused ones included."}),
                "motion_latents": ("INT", {
                    "default": MOTION_LATENTS_DEFAULT, "min": 0, "max": 32,
                    "tooltip": "Last latent frames of the previous clip given as motion context (each is 4 video "
                               "frames). The SVI authors use 1."}),
            },
            "optional": {
                "previous_latent": ("LATENT", {"tooltip": "The previous clip's latent (its sampler's output). Leave "
                                                          "empty for the first clip."}),
            },
        }

    def extend(self, positive, negative, vae, anchor_image, width: int = 832, height: int = 480, length: int = 81,
               motion_latents: int = MOTION_LATENTS_DEFAULT, previous_latent=None):
        require_version(vae, "2.1", NODE, "I2V-A14B")
        shape = geometry.latent_shape("a14b", length, height, width, 1)
        previous = None
        if previous_latent is not None:
            previous = checked_latent(previous_latent, "previous_latent")["samples"]
        anchor = encode_anchor(vae, anchor_image, width, height)
        image, mask = svi_layout(anchor, previous, motion_latents, shape[2])
        values = {"concat_latent_image": image, "concat_mask": mask.to(image.device)}
        overlap = svi_overlap(motion_latents, previous is not None)
        return set_values(positive, values), set_values(negative, values), {"samples": _zeros(shape)}, overlap


class Wan22DuoColorMatch:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Gives a decoded clip the colour statistics (per-channel mean and spread, in Lab or YCbCr) of a reference, "
        "against the colour and brightness drift of chained extensions. match = overlap: fitted on the frames the "
        "new clip shares with the previous clip (reference = the previous clip or the joined video so far); "
        "match = anchor: the whole clip against the anchor image. One transform per clip, so no flicker."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The clip with matched colours; join it (and, for image-space extension, extend from it).",)
    FUNCTION = "match"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The new clip, decoded."}),
                "reference": ("IMAGE", {"tooltip": "The previous clip (or the video joined so far) for match = "
                                                   "overlap; the anchor image for match = anchor."}),
                "match": (["overlap", "anchor"], {"tooltip": "overlap: match the frames the two clips share (same "
                                                             "content, so only the drift differs); anchor: match "
                                                             "the whole clip to the anchor image."}),
                "overlap": ("INT", {"default": 5, "min": 0, "max": MAX_LENGTH,
                                    "tooltip": "The extend node's overlap (link it): how many of the new clip's first "
                                               "frames repeat the previous clip's last ones."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "0 leaves the clip unchanged, 1 matches fully."}),
                "colour_space": (list(SPACES), {"tooltip": "lab: lightness and two colour axes, perceptually even; "
                                                           "ycbcr: luma and chroma, linear in RGB."}),
            }
        }

    def match(self, images, reference, match: str = "overlap", overlap: int = 5, strength: float = 1.0,
              colour_space: str = "lab"):
        images = check_images(images, "images")
        reference = check_images(reference, "reference")
        if tuple(images.shape[1:3]) != tuple(reference.shape[1:3]) and match == "overlap":
            raise ValueError(f"Wan22DuoColorMatch: images are {images.shape[2]}x{images.shape[1]} but reference is "
                             f"{reference.shape[2]}x{reference.shape[1]}; match = overlap compares the same frames")
        if match == "overlap":
            source, target = overlap_frames(images, reference, overlap)
        elif match == "anchor":
            source, target = images, reference
        else:
            raise ValueError(f"Wan22DuoColorMatch: match must be 'overlap' or 'anchor', got {match!r}")
        return (match_colour(images, source, target, colour_space, strength).to(images.device),)


NODE_CLASS_MAPPINGS = {
    "Wan22DuoI2VExtendSVI": Wan22DuoI2VExtendSVI,
    "Wan22DuoColorMatch": Wan22DuoColorMatch,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Wan22DuoI2VExtendSVI": "Wan 2.2 Duo I2V Extend Clip, SVI 2.0 Pro layout (I2V-A14B)",
    "Wan22DuoColorMatch": "Wan 2.2 Duo Colour Match (against drift)",
}
