"""Loader nodes: the two A14B experts, TI2V-5B and the Wan VAEs.

Loaders read only the file header when they run (so a wrong file fails at once, with
a message naming the right node or file) and return a lazy ``ModelHandle``
(``engine.memory.residency``): the weights are read when the sampler first needs them, and
the sampler's memory policy can move or drop them. ComfyUI's node cache therefore
holds two small handles, not two 14B experts' weights.
"""
from __future__ import annotations

import os
import re
from typing import Optional

import torch

from . import _comfy
from ..engine.memory.residency import ModelHandle

DIFFUSION_FOLDER = "diffusion_models"  # also models/unet, ComfyUI's legacy name for it
GGUF_EXTENSIONS = (".gguf",)
GGUF_FOLDER = "unet_gguf"  # ComfyUI-GGUF's name for the .gguf files of diffusion_models and unet
VAE_FOLDER = "vae"

WEIGHT_DTYPES = {
    "default": None,  # as stored in the file (fp8 files stay fp8)
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}
COMPUTE_DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
VAE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ROLES = ("auto", "high_noise", "low_noise")
VARIANT_TITLES = {"t2v_a14b": "T2V-A14B", "i2v_a14b": "I2V-A14B", "ti2v_5b": "TI2V-5B"}


# ---------------------------------------------------------------- helpers


def guess_role(filename: str) -> Optional[str]:
    """``"high_noise"`` / ``"low_noise"`` from a file name, or None when it does not say.

    ``wan2.2_t2v_high_noise_14B_fp16.safetensors`` -> high_noise. A bare ``high`` or
    ``low`` word (``..._high_14B...``) counts too. Names that mention both, or
    neither, give None.
    """
    stem = os.path.basename(filename).lower()
    squashed = re.sub(r"[^a-z0-9]", "", stem)  # high_noise, high-noise, HighNoise alike
    words = set(re.split(r"[^a-z0-9]+", stem))
    for found in (
        {role for role in ("high_noise", "low_noise") if role.replace("_", "") in squashed},
        {f"{word}_noise" for word in ("high", "low") if word in words},
    ):
        if len(found) == 1:
            return found.pop()
    return None


def resolve_role(role: str, filename: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {ROLES}")
    guessed = guess_role(filename)
    if role != "auto":
        if guessed is not None and guessed != role:
            # The bundled workflows set role; picking the other expert's file must not pass silently.
            raise ValueError(
                f"role is {role} but the file {os.path.basename(filename)!r} is named as the "
                f"{guessed.replace('_', '-')} expert. Pick the {role.replace('_', '-')} file in this loader, or set "
                "role to auto to go by the file name (rename the file if its name is wrong)."
            )
        return role
    if guessed is None:
        raise ValueError(
            f"cannot tell from the name {os.path.basename(filename)!r} whether it is the high-noise or the "
            "low-noise expert (expected 'high_noise' or 'low_noise' in the name); set role to high_noise or low_noise"
        )
    return guessed


def auto_compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU that has it (the reference's precision), fp16 on older GPUs, fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _pick(table: dict, value: str, what: str):
    if value not in table:
        raise ValueError(f"{what} {value!r} is not one of {list(table)}")
    return table[value]


def weight_bytes(path: str, weight_dtype: Optional[torch.dtype] = None) -> int:
    """Bytes the weights take once loaded, from the safetensors header (no tensor data read).

    Used to ask ComfyUI to make room before an expert moves to the GPU; an estimate
    (scale tensors and norms are counted at ``weight_dtype`` too). A GGUF file counts its
    tensor data as stored (quantized), or decoded to ``weight_dtype``.
    """
    from ..engine.weights.gguf import gguf_weight_bytes, is_gguf
    from ..engine.weights.safetensors_header import ST_DTYPES, read_header

    if is_gguf(path):
        return gguf_weight_bytes(path, weight_dtype)
    total = 0
    for info in read_header(path).tensors.values():
        numel = 1
        for n in info.shape:
            numel *= n
        itemsize = weight_dtype.itemsize if weight_dtype is not None else ST_DTYPES[info.dtype].itemsize
        total += numel * itemsize
    return total


def model_files() -> list[str]:
    """The diffusion model files the DiT loaders offer: safetensors and GGUF, each name once."""
    names = set(_comfy.list_files(DIFFUSION_FOLDER))
    names.update(_comfy.list_files_by_extension(DIFFUSION_FOLDER, GGUF_EXTENSIONS, registered=GGUF_FOLDER))
    return sorted(names)


def _dit_handle(path: str, weight_dtype: str, compute_dtype: str, device: str, info: dict,
                attention: Optional[str] = None, compile: Optional[str] = None) -> ModelHandle:
    """A lazy handle that loads the DiT at ``path`` onto its device when first used.

    ``attention`` / ``compile`` None (an API prompt that leaves the optional inputs out)
    means their defaults, ``auto`` and ``off``.
    """
    from ..engine.weights.checkpoint import load_dit
    from ..engine.sampling.fast import COMPILE_CHOICES, apply_fast_options

    target = _comfy.resolve_device(device)
    stored = _pick(WEIGHT_DTYPES, weight_dtype, "weight_dtype")
    compute = _pick(COMPUTE_DTYPES, compute_dtype, "compute_dtype") or auto_compute_dtype(target)
    attention, compile = attention or "auto", compile or "off"
    _pick(dict.fromkeys(attention_choices()), attention, "attention")
    _pick(dict.fromkeys(COMPILE_CHOICES), compile, "compile")
    size = weight_bytes(path, stored)

    def load(on: torch.device):
        _comfy.free_memory(size, on)  # let ComfyUI unload its models (text encoder...) first
        model = load_dit(path, compute_dtype=compute, device=on, weight_dtype=stored)
        return apply_fast_options(model, attention=attention, compile=compile)

    info = {**info, "path": path, "weight_bytes": size, "weight_dtype": weight_dtype,
            "attention": attention, "compile": compile}
    return ModelHandle(load, target, compute, info)


def attention_choices() -> list:
    from ..engine.model.attention import backend_names

    return list(backend_names())


def _speed_inputs() -> dict:
    from ..engine.sampling.fast import COMPILE_CHOICES

    return {
        "attention": (attention_choices(), {"default": "auto", "tooltip": _ATTENTION_TIP}),
        "compile": (list(COMPILE_CHOICES), {"default": "off", "tooltip": _COMPILE_TIP}),
    }


def _detect(path: str):
    from ..engine.weights.checkpoint import detect_dit

    return detect_dit(path)


# ---------------------------------------------------------------- nodes

_DEVICE_TIP = ("Device the model computes on. auto: ComfyUI's main GPU (CPU outside ComfyUI). The weights are "
               "read from disk only when the sampler first needs them.")
_WEIGHT_TIP = ("Dtype the weights are kept in. default: as stored in the file (fp8 files stay fp8, GGUF files stay "
               "quantized). fp8 halves the memory of bf16/fp16 at a small quality cost; each layer is upcast (or "
               "dequantized) to the compute dtype when used. Another choice decodes a GGUF file at load.")
_COMPUTE_TIP = ("Dtype of the matmuls and attention. auto: bf16 on GPUs that support it (the official precision), "
                "fp16 on older GPUs, fp32 on CPU. Norms, time embedding, residual stream and head always run in fp32.")

_ATTENTION_TIP = ("Attention kernel. auto: the fastest installed kernel that passed its check against PyTorch SDPA "
                  "on this GPU and dtype (SDPA when none is installed). sdpa: always PyTorch's "
                  "scaled_dot_product_attention. Every other kernel is checked once against SDPA before use; one "
                  "that fails is skipped and the log says why.")
_COMPILE_TIP = ("torch.compile the transformer blocks. off: plain PyTorch. inductor: compiled on the first step "
                "(a minute or more once per latent size), then faster steps; both experts share the compiled "
                "blocks, so the switch does not recompile. Needs a C++ compiler (and Triton on GPU); if compiling "
                "fails the log says why and sampling continues without it.")


class Wan22DuoExpertLoader:
    """One expert (high- or low-noise) of Wan 2.2 T2V-A14B or I2V-A14B."""

    CATEGORY = "Wan22Duo/loaders"
    DESCRIPTION = (
        "Loads one expert of Wan 2.2 T2V-A14B or I2V-A14B from models/diffusion_models or models/unet "
        "(safetensors, or GGUF kept quantized). Load the high-noise and "
        "the low-noise file with two of these nodes and connect both to Wan22DuoSampler, which switches between "
        "them at the official boundary and keeps only the running expert on the GPU. TI2V-5B has its own loader."
    )
    RETURN_TYPES = ("WAN22DUO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A lazy handle to the expert; its weights load when the sampler first uses them.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "unet_name": (model_files(), {
                    "tooltip": "Expert file in models/diffusion_models (or models/unet), e.g. "
                               "wan2.2_t2v_high_noise_14B_fp16.safetensors (fp16, bf16, fp8 and fp8_scaled work) "
                               "or a GGUF such as Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf (kept quantized)."}),
                "role": (list(ROLES), {
                    "default": "auto",
                    "tooltip": "Which expert this file is. auto: read 'high_noise'/'low_noise' (or 'high'/'low') "
                               "from the file name; set it when the name does not say. A set role that "
                               "contradicts the file name is refused."}),
                "weight_dtype": (list(WEIGHT_DTYPES), {"default": "default", "tooltip": _WEIGHT_TIP}),
                "compute_dtype": (list(COMPUTE_DTYPES), {"default": "auto", "tooltip": _COMPUTE_TIP}),
                "device": (_comfy.device_choices(), {"default": "auto", "tooltip": _DEVICE_TIP}),
            },
            "optional": _speed_inputs(),
        }

    def load(self, unet_name: str, role: str = "auto", weight_dtype: str = "default",
             compute_dtype: str = "auto", device: str = "auto", attention: Optional[str] = None,
             compile: Optional[str] = None):
        path = _comfy.resolve_path(DIFFUSION_FOLDER, unet_name)
        config = _detect(path)
        if config.variant == "ti2v_5b":
            raise ValueError(
                f"{os.path.basename(path)} is the TI2V-5B model, a single model with no experts; "
                "load it with Wan22DuoTI2VLoader instead of Wan22DuoExpertLoader"
            )
        role = resolve_role(role, path)
        title = VARIANT_TITLES[config.variant]
        name = f"{os.path.basename(path)} [{title} {role.replace('_', '-')} expert]"
        info = {"config": config, "variant": config.variant, "role": role, "name": name}
        return (_dit_handle(path, weight_dtype, compute_dtype, device, info, attention, compile),)


class Wan22DuoTI2VLoader:
    """The single TI2V-5B model (text- and image-to-video)."""

    CATEGORY = "Wan22Duo/loaders"
    DESCRIPTION = (
        "Loads Wan 2.2 TI2V-5B (text- and image-to-video, one model) from models/diffusion_models or models/unet "
        "(safetensors or GGUF). Connect it to "
        "the high_noise_model input of Wan22DuoSampler and leave low_noise_model empty. Use the Wan 2.2 VAE "
        "(wan2.2_vae.safetensors) with it."
    )
    RETURN_TYPES = ("WAN22DUO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A lazy handle to TI2V-5B; its weights load when the sampler first uses them.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "unet_name": (model_files(), {
                    "tooltip": "TI2V-5B file in models/diffusion_models (or models/unet), e.g. "
                               "wan2.2_ti2v_5B_fp16.safetensors or a GGUF conversion (kept quantized)."}),
                "weight_dtype": (list(WEIGHT_DTYPES), {"default": "default", "tooltip": _WEIGHT_TIP}),
                "compute_dtype": (list(COMPUTE_DTYPES), {"default": "auto", "tooltip": _COMPUTE_TIP}),
                "device": (_comfy.device_choices(), {"default": "auto", "tooltip": _DEVICE_TIP}),
            },
            "optional": _speed_inputs(),
        }

    def load(self, unet_name: str, weight_dtype: str = "default", compute_dtype: str = "auto", device: str = "auto",
             attention: Optional[str] = None, compile: Optional[str] = None):
        path = _comfy.resolve_path(DIFFUSION_FOLDER, unet_name)
        config = _detect(path)
        if config.variant != "ti2v_5b":
            guess = guess_role(path)
            which = f"the {guess.replace('_', '-')} expert" if guess else "an expert"
            raise ValueError(
                f"{os.path.basename(path)} is {which} of {VARIANT_TITLES[config.variant]}, not TI2V-5B; "
                "load each A14B expert with Wan22DuoExpertLoader (one node per expert)"
            )
        name = f"{os.path.basename(path)} [TI2V-5B]"
        info = {"config": config, "variant": config.variant, "role": None, "name": name}
        return (_dit_handle(path, weight_dtype, compute_dtype, device, info, attention, compile),)


class Wan22DuoVAELoader:
    """The Wan 2.1 VAE (A14B) or the Wan 2.2 VAE (TI2V-5B), detected from the file."""

    CATEGORY = "Wan22Duo/loaders"
    DESCRIPTION = (
        "Loads a Wan VAE from models/vae and reports which one it is: the Wan 2.1 VAE (wan_2.1_vae.safetensors, "
        "16 latent channels) for the A14B experts, the Wan 2.2 VAE (wan2.2_vae.safetensors, 48 channels) for "
        "TI2V-5B. The weights load on first use and leave the GPU after each encode or decode."
    )
    RETURN_TYPES = ("WAN22DUO_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("A lazy handle to the VAE; its repr and the node's text say which Wan VAE it is.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae_name": (_comfy.list_files(VAE_FOLDER), {
                    "tooltip": "VAE file in models/vae: wan_2.1_vae.safetensors for T2V/I2V-A14B, "
                               "wan2.2_vae.safetensors for TI2V-5B."}),
                "dtype": (list(VAE_DTYPES), {
                    "default": "fp32",
                    "tooltip": "Dtype of the VAE weights and convolutions. fp32 is the official precision; "
                               "bf16/fp16 halve memory and time at a small quality cost."}),
                "device": (_comfy.device_choices(), {
                    "default": "auto",
                    "tooltip": "Device the VAE runs on. auto: ComfyUI's main GPU (CPU outside ComfyUI)."}),
            }
        }

    def load(self, vae_name: str, dtype: str = "fp32", device: str = "auto"):
        from ..engine.weights.vae_checkpoint import detect_vae, load_vae

        path = _comfy.resolve_path(VAE_FOLDER, vae_name)
        config = detect_vae(path)
        target = _comfy.resolve_device(device)
        torch_dtype = _pick(VAE_DTYPES, dtype, "dtype")
        users = "A14B experts" if config.version == "2.1" else "TI2V-5B"
        status = f"Wan {config.version} VAE ({config.z_dim} latent channels, for {users})"
        info = {"config": config, "version": config.version, "z_dim": config.z_dim,
                "name": f"{os.path.basename(path)} [{status}]", "path": path,
                "weight_bytes": weight_bytes(path, torch_dtype)}
        handle = ModelHandle(lambda on: load_vae(path, dtype=torch_dtype, device=on), target, torch_dtype, info)
        return {"ui": {"text": [status]}, "result": (handle,)}


NODE_CLASS_MAPPINGS = {
    "Wan22DuoExpertLoader": Wan22DuoExpertLoader,
    "Wan22DuoTI2VLoader": Wan22DuoTI2VLoader,
    "Wan22DuoVAELoader": Wan22DuoVAELoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Wan22DuoExpertLoader": "Wan 2.2 Duo Expert Loader (A14B)",
    "Wan22DuoTI2VLoader": "Wan 2.2 Duo TI2V-5B Loader",
    "Wan22DuoVAELoader": "Wan 2.2 Duo VAE Loader",
}
