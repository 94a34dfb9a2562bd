"""VAE nodes: decode latents to ComfyUI IMAGE frames, encode frames to latents.

IMAGE is ComfyUI's float ``[frames, H, W, 3]`` in [0, 1], so ComfyUI's CreateVideo,
SaveVideo and SaveAnimatedWEBP take the output directly. A batch of B videos comes
out as their frames one after another (``B * F`` images), as ComfyUI's VAEDecode
does for video latents.

The VAE handle is loaded on first use and moved off the GPU after every encode or
decode, so nothing of it stays on the GPU between runs.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import torch

from . import _comfy
from .inputs import latent as checked_latent, vae_handle
from ..engine.model.geometry import pixel_frames
from ..engine.model.latents import check_latent

MAX_TILE = 8192


# ---------------------------------------------------------------- helpers shared with samplers.py


def vae_version(vae) -> str:
    """"2.1" or "2.2" for a VAE handle (from its header info, without loading)."""
    return vae.info["version"]


def require_version(vae, version: str, node: str, model: str) -> None:
    """Raise unless ``vae`` is the Wan ``version`` VAE (the one ``model`` needs)."""
    vae_handle(vae)
    found = vae_version(vae)
    if found != version:
        right = "wan_2.1_vae.safetensors" if version == "2.1" else "wan2.2_vae.safetensors"
        raise ValueError(
            f"{node} got {vae.name}, the Wan {found} VAE, but {model} uses the Wan {version} VAE; "
            f"load {right} in Wan22DuoVAELoader"
        )


def _working_bytes(vae, frames_hw: tuple[int, int]) -> int:
    """Rough GPU memory one encode/decode step needs: weights plus a few full-size activations.

    Activations of one 4-frame chunk at the widest full-resolution stage, three alive
    at once; an estimate used only to ask ComfyUI to make room.
    """
    config = vae.info["config"]
    height, width = frames_hw
    activations = 4 * height * width * max(config.base_dim, config.dec_dim) * 4 * 3
    return int(vae.info.get("weight_bytes", 0)) + activations


def acquire(vae, frames_hw: tuple[int, int]):
    """The loaded VAE module on its device, after asking ComfyUI to make room."""
    _comfy.free_memory(_working_bytes(vae, frames_hw), vae.device)
    return vae.acquire()


def auto_tile_size_for(vae, pixels_hw: tuple[int, int], overlap: int, stride: int, output_bytes: int = 0) -> int:
    """auto_tile: 0 (whole frames) when their decode fits in what the VAE's device has free
    after its weights, else the largest tile that fits (``engine.memory.estimates.auto_tile_size``).

    ``output_bytes``: the decoded video's size when it is assembled on the VAE's device
    (ComfyUI's ``--gpu-only``); it is alive through the whole decode, so it is not free."""
    from ..engine.memory.estimates import auto_tile_size, vae_decode_bytes
    from ..engine.memory.streaming import device_free

    device = vae.device
    if device.type != "cuda":
        return 0  # CPU: RAM, not a GPU, bounds it, and tiling only approximates
    config, weights = vae.info["config"], int(vae.info.get("weight_bytes", 0))
    # Ask ComfyUI for room for a whole-frame decode first: what it unloads is then free for us.
    _comfy.free_memory(weights + vae_decode_bytes(config, *pixels_hw, vae.compute_dtype) + output_bytes, device)
    loaded_here = vae.location == device
    free = device_free(device) - (0 if loaded_here else weights) - output_bytes
    size = auto_tile_size(config, *pixels_hw, max(0, free), vae.compute_dtype, stride, overlap)
    if size:
        _comfy.log.info("Wan22Duo VAE decode: %dx%d frames do not fit in %.1f GB free; decoding %d px tiles",
                        pixels_hw[1], pixels_hw[0], free / 1024 ** 3, size)
    return size


def release_gpu(vae) -> None:
    """Move the VAE's weights off the GPU (a no-op for a CPU VAE) and return cached memory."""
    vae.offload()
    _comfy.empty_cache()


def encode_video(vae, video: torch.Tensor) -> torch.Tensor:
    """``[B, 3, F, H, W]`` in [-1, 1] -> raw latent on ComfyUI's intermediate device."""
    module = acquire(vae, tuple(video.shape[-2:]))
    try:
        latent = module.encode(video)
    finally:
        del module
        release_gpu(vae)
    return latent.to(_comfy.intermediate_device())


def images_to_video(pixels: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``[F, H, W, C]`` in [0, 1] -> one video ``[1, 3, F, H, W]`` in [-1, 1]."""
    from ..engine.model.keyframes import check_pixels

    if pixels.ndim != 4 or pixels.shape[-1] < 3:
        raise ValueError(f"expected an IMAGE [frames, height, width, 3], got shape {tuple(pixels.shape)}")
    check_pixels(pixels, "pixels")
    video = pixels[..., :3].float().movedim(-1, 0).unsqueeze(0)  # [1, 3, F, H, W]
    return video * 2.0 - 1.0


def video_to_images(video: torch.Tensor) -> torch.Tensor:
    """``[B, 3, F, H, W]`` in [-1, 1] -> IMAGE ``[B*F, H, W, 3]`` in [0, 1], videos one after another."""
    images = ((video.float() + 1.0) * 0.5).clamp_(0.0, 1.0)
    return images.permute(0, 2, 3, 4, 1).reshape(-1, video.shape[3], video.shape[4], 3)


# ---------------------------------------------------------------- nodes


class Wan22DuoVAEDecode:
    CATEGORY = "Wan22Duo/vae"
    DESCRIPTION = (
        "Decodes a Wan latent to video frames with the Wan VAE, one latent frame at a time (memory does not grow "
        "with the video length). tile_size > 0 also splits each frame into overlapping tiles for large "
        "resolutions. A latent from the other Wan VAE family is rejected with a message naming the right VAE."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Video frames [frames, height, width, 3] in [0, 1]; feed CreateVideo/SaveVideo or "
                       "SaveAnimatedWEBP. Several videos come out one after another.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("WAN22DUO_VAE", {
                    "tooltip": "The VAE matching the model: Wan 2.1 for A14B, Wan 2.2 for TI2V-5B."}),
                "samples": ("LATENT", {"tooltip": "The latent from Wan22DuoSampler (or any Wan video latent)."}),
                "tile_size": ("INT", {
                    "default": 0, "min": 0, "max": MAX_TILE, "step": 32,
                    "tooltip": "Spatial tile size in pixels; 0 decodes whole frames. Try 512 if decoding runs out "
                               "of memory (tiles differ slightly from untiled output near their seams). Ignored "
                               "when auto_tile is on."}),
                "tile_overlap": ("INT", {
                    "default": 64, "min": 0, "max": MAX_TILE, "step": 16,
                    "tooltip": "Pixels neighbouring tiles share and blend; must be smaller than tile_size. "
                               "Ignored when tile_size is 0."}),
            },
            "optional": {
                "auto_tile": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Pick tile_size for you: whole frames when their decode fits in the free GPU "
                               "memory, else the largest tile that does (estimated; whole frames on CPU)."}),
            },
        }

    def decode(self, vae, samples: dict, tile_size: int = 0, tile_overlap: int = 64, auto_tile: Optional[bool] = None):
        latent, tiling, frame_hw = decode_setup(vae, samples, tile_size, tile_overlap, auto_tile, output_on_vae=True)
        progress = _comfy.Progress(latent.shape[2])
        module = acquire(vae, frame_hw)
        try:
            video = module.decode(latent, tiling=tiling, output_device=_comfy.intermediate_device(),
                                  progress=progress.absolute)
        finally:
            del module
            release_gpu(vae)
        return (video_to_images(video),)


def decode_setup(vae, samples: dict, tile_size: int, tile_overlap: int, auto_tile: Optional[bool],
                 output_on_vae: bool):
    """The checked latent, its ``Tiling`` (or None) and the frame size one decode step works on.

    ``output_on_vae``: the decoded video is assembled on ComfyUI's intermediate device, which counts
    against auto_tile's free memory when that is the VAE's accelerator (``--gpu-only``)."""
    from ..engine.model.vae.tiling import Tiling

    vae_handle(vae)
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 0:
        raise ValueError(f"tile_size must be 0 (whole frames) or a positive number of pixels, got {tile_size!r}")
    latent = checked_latent(samples, "samples")["samples"]
    # Check against the header info first, so a wrong VAE fails before loading anything.
    check_latent(latent, SimpleNamespace(z_dim=vae.info["z_dim"], version=vae_version(vae)))
    stride = 8 if vae_version(vae) == "2.1" else 16
    pixels_hw = (latent.shape[3] * stride, latent.shape[4] * stride)
    if auto_tile:
        out_device = torch.device(_comfy.intermediate_device())
        on_vae = output_on_vae and out_device.type == vae.device.type != "cpu"
        output_bytes = latent.shape[0] * 3 * pixel_frames(latent.shape[2]) * pixels_hw[0] * pixels_hw[1] * 4  # float32
        tile_size = auto_tile_size_for(vae, pixels_hw, tile_overlap, stride, output_bytes if on_vae else 0)
    tiling = Tiling(tile_size, tile_overlap) if tile_size > 0 else None
    return latent, tiling, ((tile_size, tile_size) if tiling else pixels_hw)


class Wan22DuoVAEEncode:
    CATEGORY = "Wan22Duo/vae"
    DESCRIPTION = (
        "Encodes video frames (an IMAGE batch of 4n+1 frames, width and height multiples of 8 for the Wan 2.1 VAE "
        "or 16 for the Wan 2.2 VAE) to a raw Wan latent, e.g. for video-to-video with a denoise mask."
    )
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Raw latent {'samples': [1, C, (frames-1)/4+1, H/s, W/s]} (C = 16 or 48, s = 8 or 16).",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("WAN22DUO_VAE", {"tooltip": "The Wan VAE to encode with."}),
                "pixels": ("IMAGE", {"tooltip": "Frames [frames, height, width, 3] in [0, 1]; frames must be 4n+1 "
                                                "(1, 5, ..., 81) and the size a multiple of the VAE stride."}),
            }
        }

    def encode(self, vae, pixels: torch.Tensor):
        return ({"samples": encode_video(vae, images_to_video(pixels))},)


NODE_CLASS_MAPPINGS = {
    "Wan22DuoVAEDecode": Wan22DuoVAEDecode,
    "Wan22DuoVAEEncode": Wan22DuoVAEEncode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Wan22DuoVAEDecode": "Wan 2.2 Duo VAE Decode",
    "Wan22DuoVAEEncode": "Wan 2.2 Duo VAE Encode",
}
