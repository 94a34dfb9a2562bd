"""The dual-expert sampler node and the latent/conditioning nodes that feed it.

``Wan22DuoSampler`` translates ComfyUI's CONDITIONING and LATENT into
``engine.sampling.loop.sample``: the text contexts, the I2V image conditioning
(``concat_latent_image`` / ``concat_mask``, as our I2V node or ComfyUI's
WanImageToVideo store them) and a TI2V ``noise_mask`` (as our TI2V node or ComfyUI's
Wan22ImageToVideoLatent make it). Inside ComfyUI it drives one progress bar with
previews over both experts, honours Cancel between steps and asks ComfyUI to make
room before the experts go to the GPU.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import _comfy
from .inputs import latent as checked_latent, model_handle
from .speed import phase_models, speed_inputs
from .context_windows import checked_windows, window_inputs
from .vae import encode_video, require_version
from ..engine.model import geometry

MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION; RoPE allows 1024 tokens per axis
MAX_LENGTH = 4093  # 4n+1 with at most 1024 latent frames (RoPE table size)
MAX_BATCH = 4096
MAX_STEPS = 1000


# ---------------------------------------------------------------- ComfyUI -> engine translation


def text_context(conditioning, name: str) -> tuple[torch.Tensor, dict]:
    """The ``[B, L, 4096]`` tensor and the options dict of a one-entry CONDITIONING."""
    if not isinstance(conditioning, (list, tuple)):
        got = type(conditioning).__name__
        raise ValueError(f"{name} must be a CONDITIONING from CLIPTextEncode (CLIPLoader type wan), got {got}")
    if len(conditioning) == 0:
        raise ValueError(
            f"{name} is an empty CONDITIONING (a list with no prompt entries); connect the output of a "
            "CLIPTextEncode (CLIPLoader type wan)."
        )
    if len(conditioning) > 1:
        raise ValueError(
            f"{name} holds {len(conditioning)} conditioning entries (ConditioningCombine or area conditioning); "
            "the Wan 2.2 Duo samplers take one prompt per input. Use a single CLIPTextEncode, or ConditioningConcat "
            "to join prompts."
        )
    entry = conditioning[0]
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise ValueError(f"{name} is not a CONDITIONING: its entry should be [tensor, options], got "
                         f"{type(entry).__name__}; connect a CLIPTextEncode (CLIPLoader type wan).")
    cond, options = entry
    return cond, dict(options or {})


def i2v_conditioning(positive_options: dict, negative_options: dict):
    """``I2VConditioning`` from ``concat_latent_image``/``concat_mask`` (positive first), or None."""
    from ..engine.model.conditioning import I2VConditioning

    for options in (positive_options, negative_options):
        image = options.get("concat_latent_image")
        if image is not None:
            return I2VConditioning.from_comfy(image, options.get("concat_mask"))
    return None


def set_values(conditioning, values: dict):
    """A copy of CONDITIONING with ``values`` added to every entry's options (ComfyUI's idiom)."""
    return [[cond, {**options, **values}] for cond, options in conditioning]


def _refuse_with_parallel(**chosen) -> None:
    """Step caching, leading phases and context windows run in this process's loop only; the parallel workers do
    not take them yet."""
    named = [name for name, value in chosen.items() if value]
    if named:
        raise ValueError(f"{' and '.join(named)} cannot be combined with the parallel input yet: the parallel workers "
                         f"run the two experts only. Disconnect {' or '.join(named)}, or the Wan22DuoParallel node.")


def _memory_needed(handles, policy: str) -> dict:
    """Bytes per device the experts need at once: one expert, or both under keep_both."""
    need: dict = {}
    for handle in handles:
        size = int(handle.info.get("weight_bytes", 0))
        if policy == "keep_both":
            need[handle.device] = need.get(handle.device, 0) + size
        else:
            need[handle.device] = max(need.get(handle.device, 0), size)
    return need


def _cancel_check():
    """The engine's cancel hook: ComfyUI's interrupt check raises its own exception on Cancel."""
    check = _comfy.interrupt_check()
    if check is None:
        return None

    def cancel() -> bool:
        check()
        return False

    return cancel


# ---------------------------------------------------------------- sampler

SAMPLER_TIPS = {
    "high_noise_model": "The high-noise expert (Wan22DuoExpertLoader), or the TI2V-5B model (Wan22DuoTI2VLoader).",
    "low_noise_model": "The low-noise expert of the same A14B model. Leave empty for TI2V-5B.",
    "positive": "Prompt from CLIPTextEncode with the umT5-XXL encoder (CLIPLoader type wan); for I2V-A14B, "
                "through Wan22DuoI2VConditioning or ComfyUI's WanImageToVideo.",
    "negative": "Negative prompt. The official code always uses its Chinese default negative prompt "
                "(the example workflows carry it).",
    "latent": "Starting latent: Wan22DuoEmptyLatent (T2V), the latent of Wan22DuoI2VConditioning (I2V) or "
              "Wan22DuoTI2VLatent (TI2V-5B; a start image stays in frame 0).",
    "seed": "Noise seed. Noise is drawn on the CPU as ComfyUI's KSampler does.",
    "steps": "Total denoising steps over both experts (official: 40 for A14B, 50 for TI2V-5B).",
    "cfg_high": "Guidance scale of the high-noise steps (official: 4.0 T2V, 3.5 I2V; TI2V-5B uses this one for "
                "every step, officially 5.0). 1.0 skips the negative pass.",
    "cfg_low": "Guidance scale of the low-noise steps (official: 3.0 T2V, 3.5 I2V). Unused by TI2V-5B.",
    "shift": "Flow-matching sigma shift (official: 12.0 T2V-A14B, 5.0 I2V-A14B and TI2V-5B). Higher spends "
             "more steps at high noise.",
    "boundary": "Switch to the low-noise expert once the model's timestep drops below boundary*1000. -1 (any "
                "negative value): the official boundary, 0.875 T2V, 0.900 I2V. Ignored by TI2V-5B.",
    "switch_step": "-1: switch where the boundary says. Otherwise the step index where the low-noise expert takes "
                   "over (0 = low-noise only, steps = high-noise only).",
    "sampler": "Solver. unipc: the official FlowUniPC (order 2). euler: plain flow Euler. dpmpp_2m: the "
               "official alternative (dpm++).",
    "scheduler": "wan: the official sigma grid (starts at 0.999, integer timesteps). simple: ComfyUI's simple "
                 "scheduler (starts at 1.0, float timesteps).",
    "memory": "offload_cpu: move the idle expert to CPU RAM (one expert on the GPU). release: drop it and reload "
              "from disk when needed (least RAM). keep_both: leave both where they are (fastest, needs memory "
              "for both).",
    "gpu_budget": "GPU memory each expert's weights may use. auto: what the GPU has free minus this run's "
                  "activation estimate. A number (e.g. 12 or 10.5) is that many GB; none: no limit. Blocks that "
                  "do not fit stay in RAM (the model file) and are copied in just before they run, overlapping "
                  "the previous block's compute: slower, but a 14B expert runs on a 12 GB card. Ignored on CPU.",
    "parallel": "Optional Wan22DuoParallel: run each step split over several devices (worker processes that "
                "load the experts from their files). No step previews and no cancel inside such a run.",
}


def sampler_inputs(model_type: str, tips: dict, shift: dict) -> dict:
    """The input table both sampler nodes share (names and order are public API): ``model_type`` is the
    experts' socket type, ``tips`` the tooltips by input name, ``shift`` the shift widget's default and min."""
    from ..engine.memory.residency import MEMORY_POLICIES
    from ..engine.sampling.schedule import SCHEDULES
    from ..engine.sampling.solvers import SOLVERS

    def opt(name: str, **options) -> dict:
        return {**options, "tooltip": tips[name]}

    scale = {"min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}
    return {
        "required": {
            "high_noise_model": (model_type, opt("high_noise_model")),
            "positive": ("CONDITIONING", opt("positive")),
            "negative": ("CONDITIONING", opt("negative")),
            "latent": ("LATENT", opt("latent")),
            "seed": ("INT", opt("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True)),
            "steps": ("INT", opt("steps", default=40, min=1, max=MAX_STEPS)),
            "cfg_high": ("FLOAT", opt("cfg_high", default=4.0, **scale)),
            "cfg_low": ("FLOAT", opt("cfg_low", default=3.0, **scale)),
            "shift": ("FLOAT", opt("shift", **{**scale, **shift})),
            "boundary": ("FLOAT", opt("boundary", default=-1.0, min=-1.0, max=1.0, step=0.001, round=0.001)),
            "switch_step": ("INT", opt("switch_step", default=-1, min=-1, max=MAX_STEPS)),
            "sampler": (list(SOLVERS), opt("sampler", default="unipc")),
            "scheduler": (list(SCHEDULES), opt("scheduler", default="wan")),
            "memory": (list(MEMORY_POLICIES), opt("memory", default="offload_cpu")),
        },
        "optional": {
            "low_noise_model": (model_type, opt("low_noise_model")),
        },
    }


class Wan22DuoSampler:
    CATEGORY = "Wan22Duo/sampling"
    DESCRIPTION = (
        "Runs Wan 2.2 sampling in one node: the high-noise expert for the leading steps, the low-noise expert for "
        "the rest, switched where the model's timestep falls below the boundary (the official rule), on one "
        "continuous trajectory with per-expert CFG. Only the running expert sits on the GPU (memory=offload_cpu). "
        "For TI2V-5B connect the model to high_noise_model and leave low_noise_model empty. Defaults are the "
        "official T2V-A14B settings; I2V-A14B uses shift 5.0 and cfg 3.5/3.5, TI2V-5B 50 steps, shift 5.0, cfg 5.0."
    )
    RETURN_TYPES = ("LATENT", "INT")
    RETURN_NAMES = ("latent", "switch_step")
    OUTPUT_TOOLTIPS = (
        "The denoised raw latent; decode it with Wan22DuoVAEDecode.",
        "Steps [0, switch_step) ran on the high-noise expert (equals steps for TI2V-5B).",
    )
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        inputs = sampler_inputs("WAN22DUO_MODEL", SAMPLER_TIPS, {"default": 12.0, "min": 0.1})
        inputs["optional"]["gpu_budget"] = ("STRING", {"default": "auto", "tooltip": SAMPLER_TIPS["gpu_budget"]})
        inputs["optional"]["parallel"] = ("WAN22DUO_PARALLEL", {"tooltip": SAMPLER_TIPS["parallel"]})
        inputs["optional"].update(speed_inputs())
        inputs["optional"].update(window_inputs())
        return inputs

    def sample(self, high_noise_model, positive, negative, latent: dict, seed: int, steps: int = 40,
               cfg_high: float = 4.0, cfg_low: float = 3.0, shift: float = 12.0, boundary: float = -1.0,
               switch_step: int = -1, sampler: str = "unipc", scheduler: str = "wan", memory: str = "offload_cpu",
               low_noise_model=None, gpu_budget: Optional[str] = None, parallel: Optional[dict] = None,
               step_cache=None, lead_phases=None, context_windows=None):
        from ..engine.sampling.loop import sample

        windows = checked_windows(context_windows, "Wan22DuoSampler")

        model_handle(high_noise_model, "high_noise_model")
        if low_noise_model is not None:
            model_handle(low_noise_model, "low_noise_model")
        pos, pos_options = text_context(positive, "positive")
        neg, neg_options = text_context(negative, "negative")
        samples = checked_latent(latent)["samples"].cpu()  # the engine draws noise and returns results on the CPU
        noise_mask = latent.get("noise_mask")
        lead = phase_models(lead_phases, "WAN22DUO_MODEL", "Wan22DuoSampler")
        handles = [h for h in (high_noise_model, low_noise_model) if h is not None] + [p.model for p in lead]
        settings = dict(seed=seed, steps=steps, cfg_high=cfg_high, cfg_low=cfg_low, shift=shift,
                        boundary=None if boundary < 0 else boundary, switch_step=switch_step, solver=sampler,
                        schedule=scheduler, memory=memory, budget="auto" if gpu_budget is None else gpu_budget,
                        noise_mask=None if noise_mask is None else noise_mask.cpu(),
                        i2v=i2v_conditioning(pos_options, neg_options))
        if parallel is not None:  # the workers load the experts; this process holds none of them
            from .parallel import run_parallel

            _refuse_with_parallel(step_cache=step_cache, lead_phases=lead, context_windows=windows)
            result = run_parallel(parallel, high_noise_model, low_noise_model, latent=samples, positive=pos,
                                  negative=neg, **settings)
        else:
            for device, size in _memory_needed(handles, memory).items():
                _comfy.free_memory(size, device)
            progress = _comfy.Progress(steps, latent_channels=samples.shape[1])
            result = sample(high_noise_model, low_noise_model, samples, pos, neg, **settings,
                            callback=lambda info: progress(info.step, info.x0), cancel=_cancel_check(),
                            lead=lead, step_cache=step_cache, windows=windows)
        _comfy.empty_cache()
        out = {**latent, "samples": result.latent.to(_comfy.intermediate_device())}
        return {"ui": {"wan22duo_switch": [result.switch_info()]}, "result": (out, result.switch_step)}


# ---------------------------------------------------------------- latent nodes

_LENGTH_TIP = "Frames of the video: 4n+1 (1, 5, ..., 81, ..., 121). Each 4 frames make one latent frame."
_BATCH_TIP = "Videos generated at once (each with its own noise from the same seed)."


def _size_inputs(width: int, height: int, length: int, step: int) -> dict:
    return {
        "width": ("INT", {"default": width, "min": step, "max": MAX_RESOLUTION, "step": step,
                          "tooltip": f"Video width in pixels, a multiple of {step}."}),
        "height": ("INT", {"default": height, "min": step, "max": MAX_RESOLUTION, "step": step,
                           "tooltip": f"Video height in pixels, a multiple of {step}."}),
        "length": ("INT", {"default": length, "min": 1, "max": MAX_LENGTH, "step": 4, "tooltip": _LENGTH_TIP}),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH, "tooltip": _BATCH_TIP}),
    }


def _zeros(shape) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.float32, device=_comfy.intermediate_device())


class Wan22DuoEmptyLatent:
    CATEGORY = "Wan22Duo/latent"
    DESCRIPTION = (
        "An empty latent for T2V-A14B (16 channels, Wan 2.1 VAE): [batch, 16, (length-1)/4+1, height/8, width/8]. "
        "Official sizes: 1280x720 or 832x480 (either orientation), 81 frames at 16 fps."
    )
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Zero latent; the sampler starts from seeded noise of this shape.",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _size_inputs(1280, 720, 81, 16)}

    def generate(self, width: int = 1280, height: int = 720, length: int = 81, batch_size: int = 1):
        return ({"samples": _zeros(geometry.latent_shape("a14b", length, height, width, batch_size))},)


def check_image(image: torch.Tensor, name: str) -> None:
    """An IMAGE input: its shape here, its pixels by the one shared check (``keyframes.check_pixels``)."""
    from ..engine.model.keyframes import check_pixels

    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] < 3 or image.shape[0] < 1:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name} must be an IMAGE [frames, height, width, 3] in [0, 1], got {shape}")
    check_pixels(image, name)


def center_crop_to_aspect(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop ``[k, C, h, w]`` frames symmetrically to the aspect ratio ``width : height``.

    Only the longer side is cut (to the nearest whole pixel), so an image that already
    has the target aspect ratio passes through untouched.
    """
    h, w = frames.shape[-2:]
    if w * height > h * width:  # too wide
        keep = max(1, round(h * width / height))
        left = (w - keep) // 2
        return frames[..., :, left:left + keep]
    keep = max(1, round(w * height / width))  # too tall (or exact: keep == h)
    top = (h - keep) // 2
    return frames[..., top:top + keep, :]


def i2v_video(start_image: torch.Tensor, width: int, height: int, length: int) -> tuple[torch.Tensor, int]:
    """The official I2V conditioning video (spec §3.2) and how many start frames it holds.

    The start frames (the first ``min(frames, length)`` images) go to [-1, 1], are
    center-cropped to the aspect ratio of ``width x height`` (as ComfyUI's
    WanImageToVideo does, so nothing is stretched) and resized with the official kernel:
    bicubic, without antialias or clamp. When the image already has the target aspect
    ratio this is exactly the official preprocessing. The remaining frames are zeros
    (mid-gray). Returns ``[1, 3, length, height, width]``.
    """
    check_image(start_image, "start_image")
    frames = start_image[:length, :, :, :3].float().movedim(-1, 1) * 2.0 - 1.0  # [k, 3, h, w]
    frames = center_crop_to_aspect(frames, width, height)
    frames = F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False)
    video = torch.zeros(1, 3, length, height, width, dtype=torch.float32)
    video[0, :, : frames.shape[0]] = frames.movedim(0, 1)
    return video, frames.shape[0]


class Wan22DuoI2VConditioning:
    CATEGORY = "Wan22Duo/latent"
    DESCRIPTION = (
        "Image-to-video conditioning for I2V-A14B, as the official code prepares it: the start image (center-"
        "cropped to the aspect ratio of width x height, then resized bicubic) followed by gray frames is encoded with the Wan 2.1 VAE, and the image latent "
        "and its mask are added to both prompts (the same keys ComfyUI's WanImageToVideo uses). Also returns the "
        "matching empty latent."
    )
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    OUTPUT_TOOLTIPS = (
        "Positive prompt with the image conditioning.",
        "Negative prompt with the same image conditioning.",
        "Empty 16-channel latent of the chosen size for Wan22DuoSampler.",
    )
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "Prompt from CLIPTextEncode (umT5-XXL)."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt from CLIPTextEncode (umT5-XXL)."}),
                "vae": ("WAN22DUO_VAE", {"tooltip": "The Wan 2.1 VAE (wan_2.1_vae.safetensors)."}),
                "start_image": ("IMAGE", {
                    "tooltip": "First frame of the video. It is center-cropped to the aspect ratio of width x "
                               "height, then resized (bicubic, as the official code); nothing is stretched. "
                               "Several images fix several first frames."}),
                **_size_inputs(1280, 720, 81, 16),
            }
        }

    def encode(self, positive, negative, vae, start_image: torch.Tensor, width: int = 1280, height: int = 720,
               length: int = 81, batch_size: int = 1):
        from ..engine.model.conditioning import official_i2v_mask

        shape = geometry.latent_shape("a14b", length, height, width, batch_size)
        require_version(vae, "2.1", "Wan22DuoI2VConditioning", "I2V-A14B")
        video, known = i2v_video(start_image, width, height, length)
        image_latent = encode_video(vae, video)
        known_mask = official_i2v_mask([i < known for i in range(length)], tuple(shape[-2:]))
        values = {"concat_latent_image": image_latent,
                  "concat_mask": (1.0 - known_mask).to(image_latent.device)}  # ComfyUI convention: 0 = known
        return set_values(positive, values), set_values(negative, values), {"samples": _zeros(shape)}


def ti2v_frame(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """One start frame for TI2V-5B as the official code prepares it (spec §3.3): ``[1, 3, 1, H, W]`` in [-1, 1].

    The image is scaled (PIL LANCZOS, on 8-bit values as the official code reads
    files) until it covers ``width x height`` with its aspect ratio kept, then center-cropped.
    """
    from PIL import Image

    pixels = (image[:, :, :3].float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    pil = Image.fromarray(pixels)
    iw, ih = pil.size
    scale = max(width / iw, height / ih)
    pil = pil.resize((round(iw * scale), round(ih * scale)), Image.LANCZOS)
    left, top = (pil.width - width) // 2, (pil.height - height) // 2
    pil = pil.crop((left, top, left + width, top + height))
    frame = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0)  # [H, W, 3]
    return (frame * 2.0 - 1.0).movedim(-1, 0)[None, :, None]


class Wan22DuoTI2VLatent:
    CATEGORY = "Wan22Duo/latent"
    DESCRIPTION = (
        "The starting latent for TI2V-5B (48 channels, Wan 2.2 VAE). Without an image it is empty (text-to-video). "
        "With start_image, the image is resized to cover width x height, center-cropped, encoded as one frame into "
        "latent frame 0, and noise_mask keeps that frame fixed while the rest is generated (as the official code). "
        "Official size 1280x704 (or 704x1280), 121 frames at 24 fps."
    )
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Raw latent, with a noise_mask (0 on frame 0) when a start image is given.",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("WAN22DUO_VAE", {"tooltip": "The Wan 2.2 VAE (wan2.2_vae.safetensors)."}),
                **_size_inputs(1280, 704, 121, 32),
            },
            "optional": {
                "start_image": ("IMAGE", {
                    "tooltip": "Optional first frame (image-to-video). Only the first image is used."}),
            },
        }

    def generate(self, vae, width: int = 1280, height: int = 704, length: int = 121, batch_size: int = 1,
                 start_image: Optional[torch.Tensor] = None):
        shape = geometry.latent_shape("ti2v_5b", length, height, width, batch_size)
        require_version(vae, "2.2", "Wan22DuoTI2VLatent", "TI2V-5B")
        samples = _zeros(shape)
        if start_image is None:
            return ({"samples": samples},)
        check_image(start_image, "start_image")
        image_latent = encode_video(vae, ti2v_frame(start_image[0], width, height))
        samples[:, :, :1] = image_latent.to(samples.device)
        noise_mask = torch.ones(shape[0], 1, *shape[2:], dtype=torch.float32, device=samples.device)
        noise_mask[:, :, 0] = 0.0  # 0 = keep: frame 0 holds the image
        return ({"samples": samples, "noise_mask": noise_mask},)


NODE_CLASS_MAPPINGS = {
    "Wan22DuoSampler": Wan22DuoSampler,
    "Wan22DuoEmptyLatent": Wan22DuoEmptyLatent,
    "Wan22DuoI2VConditioning": Wan22DuoI2VConditioning,
    "Wan22DuoTI2VLatent": Wan22DuoTI2VLatent,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Wan22DuoSampler": "Wan 2.2 Duo Sampler",
    "Wan22DuoEmptyLatent": "Wan 2.2 Duo Empty Latent (T2V-A14B)",
    "Wan22DuoI2VConditioning": "Wan 2.2 Duo I2V Conditioning (I2V-A14B)",
    "Wan22DuoTI2VLatent": "Wan 2.2 Duo TI2V Latent (TI2V-5B)",
}
