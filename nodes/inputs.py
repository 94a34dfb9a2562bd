"""Named checks for node inputs that only an API call (or another pack's node) can get wrong.

ComfyUI's editor only connects sockets of the right type, but ``POST /prompt`` takes any JSON
and other packs' nodes may return anything: ``None``, a numpy array, a dict without
``samples``. Without these checks such values end in ``AttributeError: 'NoneType' object has no
attribute ...`` deep in the engine. Each check names the input, what it got and what to connect.
"""
from __future__ import annotations

from typing import Any

import torch


def _got(value: Any) -> str:
    if value is None:
        return "nothing (None: is the input connected?)"
    if type(value).__module__ == "numpy":
        return f"a numpy {type(value).__name__}; node values are torch tensors"
    return f"a {type(value).__name__}"


def model_handle(value: Any, name: str) -> Any:
    """A ``WAN22DUO_MODEL`` (``engine.memory.residency.ModelHandle``) from our loaders or LoRA node."""
    from ..engine.memory.residency import ModelHandle

    if not isinstance(value, ModelHandle):
        raise ValueError(f"{name} must be a WAN22DUO_MODEL from Wan22DuoExpertLoader, Wan22DuoTI2VLoader or "
                         f"Wan22DuoLoraLoader, got {_got(value)}. For a ComfyUI MODEL use Wan22DuoModelSampler.")
    return value


def comfy_model(value: Any, name: str) -> Any:
    """A ComfyUI ``MODEL`` (a ModelPatcher: it has ``model`` and ``get_model_object``)."""
    if value is None or not (hasattr(value, "model") and hasattr(value, "get_model_object")):
        raise ValueError(f"{name} must be a ComfyUI MODEL (UNETLoader, UnetLoaderGGUF, a LoRA or patch node), got "
                         f"{_got(value)}. For our loaders' WAN22DUO_MODEL use Wan22DuoSampler.")
    return value


def vae_handle(value: Any, name: str = "vae") -> Any:
    """A ``WAN22DUO_VAE`` (a ModelHandle whose info names a VAE) from Wan22DuoVAELoader."""
    from ..engine.memory.residency import ModelHandle

    if not isinstance(value, ModelHandle) or "z_dim" not in value.info:
        raise ValueError(f"{name} must be a WAN22DUO_VAE from Wan22DuoVAELoader, got {_got(value)}")
    return value


def latent(value: Any, name: str = "latent") -> dict:
    """A ``LATENT``: a dict whose ``samples`` is a 5-D torch tensor (a video latent)."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a LATENT (a dict with a 'samples' tensor, from an empty-latent or "
                         f"conditioning node), got {_got(value)}")
    if "samples" not in value:
        keys = ", ".join(repr(k) for k in list(value)[:8]) or "none"
        raise ValueError(f"{name} is a LATENT without 'samples' (its keys: {keys}); connect the latent output of "
                         "an empty-latent, conditioning or sampler node")
    samples = value["samples"]
    if not isinstance(samples, torch.Tensor):
        raise ValueError(f"{name}['samples'] must be a torch tensor, got {_got(samples)}")
    mask = value.get("noise_mask")
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name}['noise_mask'] must be a torch tensor, got {_got(mask)}")
    return value


def keyframes(value: Any, name: str = "keyframes") -> list:
    """A ``WAN22DUO_KEYFRAMES`` chain: a list of ``engine.model.keyframes.Keyframe`` (or nothing)."""
    from ..engine.model.keyframes import Keyframe

    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(k, Keyframe) for k in value):
        raise ValueError(f"{name} must come from a Wan22DuoKeyframe node (a list of keyframes), got {_got(value)}")
    return list(value)


def file_name(value: Any, name: str) -> str:
    """A file-name combo value (``lora_name``, ``unet_name``, ...)."""
    if not isinstance(value, str) or not value:
        got = "an empty string" if value == "" else _got(value)
        raise ValueError(f"{name} must be a file name from the list, got {got}")
    return value
