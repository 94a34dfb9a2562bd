"""What both DiT readers share: recognising a Wan 2.2 DiT from its keys, and holding its tensors.

The safetensors reader (``engine.weights.checkpoint``) and the GGUF reader
(``engine.weights.gguf``) see the same checkpoint keys and build the same ``WanModel``;
this module is what they have in common, below both, so neither imports the other
(``checkpoint`` hands GGUF files to ``gguf``; ``gguf`` needs nothing of ``checkpoint``):

* the keys: the ``model.diffusion_model.`` prefixes, naming files that are something else
  (:func:`identify_foreign`), the config read from tensor shapes, and the one error type
  (:class:`CheckpointError`) with the report of missing / unexpected / mis-shaped keys;
* holding a tensor: the memory map of the whole file (:func:`map_file`), the dtype names
  the loaders accept, and :func:`hold_weight`, which keeps a stored weight as it is or
  converts it for ``weight_dtype``.
"""
from __future__ import annotations

import re
from typing import Optional, Union

import torch

from ..errors import public
from ..model.dit import WanConfig
from ..model.ops import FP8_DTYPES, quantize_fp8
from .safetensors_header import clip, quote_list

COMPUTE_NAMES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

WEIGHT_NAMES = {**COMPUTE_NAMES, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}

PREFIXES = ("model.diffusion_model.", "diffusion_model.")

EXPECTED = ("expected a Wan 2.2 diffusion model from the diffusion_models folder, such as "
            "wan2.2_t2v_high_noise_14B_fp16.safetensors, wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors "
            "or wan2.2_ti2v_5B_fp16.safetensors")


@public
class CheckpointError(ValueError):
    """A file that cannot be loaded as a Wan 2.2 DiT; the message says why and what to use."""


# ---------------------------------------------------------------- what a file is


def strip_prefix(keys) -> tuple[str, dict[str, str]]:
    """The diffusion-model prefix in use (or "") and a map stripped key -> file key."""
    keys = list(keys)
    for prefix in PREFIXES:
        if sum(k.startswith(prefix) for k in keys) > len(keys) // 2:
            return prefix, {(k[len(prefix):] if k.startswith(prefix) else k): k for k in keys}
    return "", {k: k for k in keys}


def _has(keys, *needles: str, suffix: bool = False) -> bool:
    return any((k.endswith(n) if suffix else n in k) for k in keys for n in needles)


def identify_foreign(keys) -> Optional[str]:
    """Say what a key set is when it is not a Wan 2.2 DiT ("the Wan 2.1 VAE; load it ..."), else None."""
    keys = list(keys)
    if _has(keys, "decoder.middle.0.residual.0.gamma", suffix=True):
        version = "2.2" if _has(keys, "decoder.upsamples.0.upsamples.0.residual.2.weight", suffix=True) else "2.1"
        return f"the Wan {version} VAE; load it with Wan22DuoVAELoader from the vae folder"
    if _has(keys, "decoder.mid_block.resnets.0.norm1.gamma", suffix=True):
        return ("a diffusers-format Wan VAE (AutoencoderKLWan); use wan_2.1_vae.safetensors or wan2.2_vae.safetensors "
                "with Wan22DuoVAELoader")
    if _has(keys, "SelfAttention.q.weight", "token_embedding.weight", "shared.weight", suffix=True):
        return ("a T5 / umT5-XXL text encoder; load it with ComfyUI's CLIPLoader (type wan) from the text_encoders "
                "folder (umt5_xxl_fp16.safetensors)")
    if _has(keys, "vision_model.", "visual.transformer", "visual.proj"):
        return "a CLIP vision model; Wan 2.2 uses none"
    if _has(keys, "lora_down", "lora_up", "lora_A", "lora_B", "lora_unet_"):
        return "a LoRA; load it with Wan22DuoLoraLoader from the loras folder, on top of a Wan 2.2 expert"
    if _has(keys, "condition_embedder.time_embedder", "attn1.to_q.weight"):
        return ("a diffusers-format WanTransformer3DModel; use the ComfyUI single-file checkpoint "
                "(e.g. wan2.2_t2v_high_noise_14B_fp16.safetensors) instead")
    if "head.modulation" in keys:
        return _identify_wan_relative(keys)
    for needle, what in (("double_blocks.", "a FLUX model"), ("joint_blocks.", "a Stable Diffusion 3 model"),
                         ("input_blocks.", "a Stable Diffusion UNet"), ("transformer_blocks.", "a non-Wan DiT"),
                         ("model.layers.", "a language model"), ("encoder.down.", "a non-Wan VAE")):
        if _has(keys, needle):
            return f"{what}, not Wan"
    if _has(keys, ".self_attn.norm_q.weight", suffix=True):
        return None  # Wan DiT blocks without a head: a shard; the missing keys say so later
    sample = quote_list(sorted(keys)[:4])
    return f"not a model this loader recognises ({len(keys)} tensors; first keys: {sample})"


def _identify_wan_relative(keys: list[str]) -> Optional[str]:
    """Other members of the Wan family share ``head.modulation``; name the ones we reject."""
    if _has(keys, "img_emb."):
        return ("a Wan 2.1 image-to-video / first-last-frame model (it has the CLIP image branch img_emb, which "
                "Wan 2.2 does not); use wan2.2_i2v_high_noise_14B_fp16.safetensors and "
                "wan2.2_i2v_low_noise_14B_fp16.safetensors or similar")
    if _has(keys, "vace_blocks.", "vace_patch_embedding"):
        return "a Wan VACE model, which this pack does not run"
    if _has(keys, "audio", "trainable_cond_mask"):
        return "the Wan 2.2 S2V (speech-to-video) model, which this pack does not run"
    if _has(keys, "motion_encoder", "pose_patch_embedding", "face_adapter"):
        return "a Wan Animate model, which this pack does not run"
    if _has(keys, "control_adapter", "ref_conv"):
        return "a Wan Fun (control / camera) model, which this pack does not run"
    return None


def config_from_shapes(shapes: dict[str, tuple[int, ...]], file_name: str = "") -> WanConfig:
    """Read dim, ffn_dim, layers, in/out and text dims from the tensor shapes (spec §6.1)."""
    needed = ("head.modulation", "head.head.weight", "patch_embedding.weight", "blocks.0.ffn.0.weight",
              "text_embedding.0.weight", "time_embedding.0.weight")
    absent = [k for k in needed if k not in shapes]
    if absent:
        shard = " It looks like one shard of a sharded checkpoint." if re.search(r"-of-\d+", file_name) else ""
        raise CheckpointError(f"{file_name} is missing {', '.join(absent)}, so it is not a complete Wan 2.2 "
                              f"diffusion model.{shard} {EXPECTED}")
    layers = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
    patch = shapes["patch_embedding.weight"]
    try:
        return WanConfig(dim=shapes["head.modulation"][-1], ffn_dim=shapes["blocks.0.ffn.0.weight"][0],
                         num_layers=max(layers) + 1, in_dim=patch[1], out_dim=shapes["head.head.weight"][0] // 4,
                         text_dim=shapes["text_embedding.0.weight"][1], freq_dim=shapes["time_embedding.0.weight"][1],
                         patch_size=tuple(patch[2:]))
    except ValueError as err:
        raise CheckpointError(f"{file_name} has the Wan DiT layout but {err}. {EXPECTED}") from None


def _listing(label: str, items: list[str], limit: int = 8) -> str:
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return f"{len(items)} {label}: {', '.join(clip(i) for i in sorted(items)[:limit])}{more}"


def raise_if_mismatch(name: str, config: WanConfig, missing, unexpected, misshaped) -> None:
    if not (missing or unexpected or misshaped):
        return
    parts = [_listing(label, items) for label, items in
             (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped tensors", misshaped)) if items]
    shard = (" It looks like one shard of a sharded checkpoint; use a single-file checkpoint."
             if re.search(r"-of-\d+", name) else "")
    raise CheckpointError(f"{name} does not match the Wan 2.2 {config.variant} layout (dim {config.dim}, "
                          f"{config.num_layers} layers): {'; '.join(parts)}.{shard} {EXPECTED}")


# ---------------------------------------------------------------- holding tensors


def map_file(header) -> torch.UntypedStorage:
    """The whole file of ``header`` (safetensors or GGUF: anything with ``path`` and ``size``) as one
    private, read-only-in-practice memory map (pages load on first touch)."""
    return torch.UntypedStorage.from_file(str(header.path), shared=False, nbytes=header.size)


def in_storage(view: torch.Tensor, storage: torch.UntypedStorage) -> bool:
    """The view reads the mapped bytes (``tensor_view`` copies misaligned tensors)."""
    start = storage.data_ptr()
    return start <= view.data_ptr() < start + storage.nbytes()


def as_dtype(value: Union[None, str, torch.dtype], allowed: dict[str, torch.dtype], what: str) -> Optional[torch.dtype]:
    """A dtype from a name ("bf16") or a torch dtype; None / "default" give None."""
    if value is None or value == "default":
        return None
    if isinstance(value, str) and value in allowed:
        return allowed[value]
    if isinstance(value, torch.dtype) and value in allowed.values():
        return value
    raise ValueError(f"{what} {value!r} is not supported; use one of {sorted(allowed)} or the torch dtypes")


def hold_weight(w: torch.Tensor, scale: Optional[torch.Tensor], target: Optional[torch.dtype],
                device: torch.device) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A casting layer's weight (and scale) in the dtype it will be kept in, on ``device``.

    ``target`` None keeps the stored form. Converting to fp8 quantises with a fresh
    per-tensor scale; converting away from scaled fp8 dequantises first.
    """
    w = w.to(device)
    scale = None if scale is None else scale.to(device, torch.float32).reshape(())
    if keeps_stored_form(w.dtype, scale is not None, target):
        return w, scale
    full = w.float() if scale is None else w.float() * scale
    if target in FP8_DTYPES:
        return quantize_fp8(full, target)
    return full.to(target), None


def keeps_stored_form(stored: torch.dtype, scaled: bool, target: Optional[torch.dtype]) -> bool:
    """Whether ``hold_weight`` keeps a weight's bytes as the file stores them."""
    return target is None or (target == stored and (not scaled or target in FP8_DTYPES))
