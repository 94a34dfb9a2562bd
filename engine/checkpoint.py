"""Load Wan 2.2 DiT checkpoints from ``.safetensors``, memory-mapped and strictly checked.

GGUF files (told apart by their first bytes) are read by ``engine.gguf``; ``detect_dit``,
``describe_file`` and ``load_dit`` hand them over, so callers need not care which it is.

* ``detect_dit(path)`` reads only the header and returns the ``WanConfig``;
* ``load_dit(path, ...)`` builds the model on the meta device and assigns tensors that
  are views of the memory-mapped file, so a 14B expert is never held twice; a tensor is
  copied only when it must change dtype (``weight_dtype``) or device, one at a time;
* ``describe_file(path)`` says in words what a file is (used in error messages and by
  nodes); every failure raises ``CheckpointError`` naming the file, what it looks like
  and which file to use instead.

Accepted: keys as in the official release (spec §6.1) with or without a
``model.diffusion_model.`` or ``diffusion_model.`` prefix; fp32, fp16, bf16, fp8
e4m3fn / e5m2 tensors; ComfyUI's scaled fp8 in the legacy layout
(``<layer>.scale_weight``, ``scaled_fp8`` marker, ``<layer>.scale_input``) and the newer
one (``<layer>.weight_scale``, ``<layer>.input_scale``, ``<layer>.comfy_quant`` or the
``_quantization_metadata`` header entry). Input scales are read past on purpose: the
model always multiplies in full precision with the dequantised weight (spec §6.2), so
an activation scale has nothing to act on.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from . import safetensors_header
from .dit import WanConfig, WanModel
from .errors import public
from .ops import CASTING_LAYERS, FP8_DTYPES, quantize_fp8
from .safetensors_header import MAX_HEADER, ST_DTYPES, Header, TensorInfo, clip, quote, quote_list, what_is  # noqa: F401
from .streaming import register_file_view

log = logging.getLogger("wan22duo")

PathLike = Union[str, os.PathLike]

COMPUTE_NAMES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHT_NAMES = {**COMPUTE_NAMES, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
PREFIXES = ("model.diffusion_model.", "diffusion_model.")
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
IGNORED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
MARKER = "scaled_fp8"
EXPECTED = ("expected a Wan 2.2 diffusion model from the diffusion_models folder, such as "
            "wan2.2_t2v_high_noise_14B_fp16.safetensors, wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors "
            "or wan2.2_ti2v_5B_fp16.safetensors")


@public
class CheckpointError(ValueError):
    """A file that cannot be loaded as a Wan 2.2 DiT; the message says why and what to use."""


# ---------------------------------------------------------------- safetensors header


def sniff(path: Path) -> Optional[str]:
    """What a non-safetensors file looks like from its first bytes, or None; a GGUF gets the DiT hint."""
    what = what_is(path)
    if what is not None and what.startswith("a GGUF file"):
        return ("a GGUF file; Wan 2.2 diffusion models in GGUF load with Wan22DuoExpertLoader / Wan22DuoTI2VLoader, "
                "other GGUF models with ComfyUI-GGUF")
    return what


def read_header(path: PathLike) -> Header:
    """Parse and strictly check a safetensors header (``engine.safetensors_header``); no tensor data read."""
    return safetensors_header.read_header(path, CheckpointError, EXPECTED, sniff)


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


# ---------------------------------------------------------------- config and plan


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


@dataclass
class DitFile:
    """Everything known about a DiT file from its header: what to load from where."""

    header: Header
    config: WanConfig
    prefix: str
    params: dict[str, str]  # model parameter name -> file key
    scales: dict[str, str] = field(default_factory=dict)  # layer name -> file key of its weight scale
    ignored: list[str] = field(default_factory=list)

    @property
    def storage(self) -> str:
        """Stored form of the Linear weights: "fp16", "fp8_e4m3fn scaled", "mixed bf16/fp8_e4m3fn", ..."""
        names = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "F8_E4M3": "fp8_e4m3fn", "F8_E5M2": "fp8_e5m2",
                 "F64": "fp64"}
        kinds = sorted({names.get(self.header.tensors[f].dtype, "?") for k, f in self.params.items()
                        if re.search(r"(attn\.[qkvo]|ffn\.[02])\.weight$", k)})
        kind = kinds[0] if len(kinds) == 1 else "mixed " + "/".join(kinds)
        return kind + (" scaled" if self.scales else "")


def inspect_dit(path: PathLike) -> DitFile:
    """Read and check a DiT file's header (no tensor data); raise ``CheckpointError`` if it is not one."""
    header = read_header(path)
    name = clip(header.path.name)
    prefix, by_key = strip_prefix(header.tensors)
    foreign = identify_foreign(by_key)
    if foreign:
        raise CheckpointError(f"{name} is {foreign}. {EXPECTED}")
    shapes = {k: header.tensors[f].shape for k, f in by_key.items()}
    config = config_from_shapes(shapes, name)
    with torch.device("meta"):
        meta = WanModel(config)
    expected = {n: tuple(p.shape) for n, p in meta.named_parameters()}
    layers = {n for n, m in meta.named_modules() if isinstance(m, CASTING_LAYERS)}  # may carry fp8 scales
    dit = DitFile(header, config, prefix, {})
    unexpected, misshaped = [], []
    for key, file_key in by_key.items():
        if key in expected:
            dit.params[key] = file_key
            if shapes[key] != expected[key]:
                misshaped.append(f"{key} is {list(shapes[key])}, expected {list(expected[key])}")
        elif key.endswith(SCALE_SUFFIXES) and key.rsplit(".", 1)[0] in layers:
            dit.scales[key.rsplit(".", 1)[0]] = file_key
            if math.prod(shapes[key]) != 1:
                misshaped.append(f"{key} is {list(shapes[key])}, only per-tensor (1-element) scales are supported")
        elif key == MARKER or (key.endswith(IGNORED_SUFFIXES) and key.rsplit(".", 1)[0] in layers):
            dit.ignored.append(file_key)
        else:
            unexpected.append(key)
    _check_quant_formats(header, dit)
    missing = sorted(set(expected) - set(dit.params))
    _raise_if_mismatch(name, config, missing, unexpected, misshaped)
    return dit


def _listing(label: str, items: list[str], limit: int = 8) -> str:
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return f"{len(items)} {label}: {', '.join(clip(i) for i in sorted(items)[:limit])}{more}"


def _raise_if_mismatch(name: str, config: WanConfig, missing, unexpected, misshaped) -> None:
    if not (missing or unexpected or misshaped):
        return
    parts = [_listing(label, items) for label, items in
             (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped tensors", misshaped)) if items]
    shard = (" It looks like one shard of a sharded checkpoint; use a single-file checkpoint."
             if re.search(r"-of-\d+", name) else "")
    raise CheckpointError(f"{name} does not match the Wan 2.2 {config.variant} layout (dim {config.dim}, "
                          f"{config.num_layers} layers): {'; '.join(parts)}.{shard} {EXPECTED}")


def _check_quant_formats(header: Header, dit: DitFile) -> None:
    """Reject quantisation formats other than per-tensor fp8 (ComfyUI's nvfp4, int8, mxfp8, ...)."""
    formats = set()
    meta = header.metadata.get("_quantization_metadata")
    if meta:
        try:
            layers = json.loads(meta).get("layers", {})
            formats |= {str(v.get("format")) for v in layers.values() if isinstance(v, dict)}
        except (ValueError, AttributeError):
            log.warning("%s: unreadable _quantization_metadata ignored", clip(header.path.name))
    with open(header.path, "rb") as f:
        for key in (k for k in dit.ignored if k.endswith(".comfy_quant")):
            info = header.tensors[key]
            f.seek(info.start)
            try:
                formats.add(str(json.loads(f.read(info.end - info.start)).get("format")))
            except (ValueError, AttributeError):
                raise CheckpointError(f"{clip(header.path.name)}: {quote(key)} holds no readable quantisation "
                                      f"JSON") from None
    for name, file_key in dit.params.items():
        if name.endswith(".weight") and not ST_DTYPES[header.tensors[file_key].dtype].is_floating_point:
            formats.add(f"{header.tensors[file_key].dtype} weights")
    bad = sorted(f for f in formats if f not in ("float8_e4m3fn", "float8_e5m2"))
    if bad:
        raise CheckpointError(f"{clip(header.path.name)} uses the quantisation format(s) {quote_list(bad)}; only "
                              f"fp8 (e4m3fn / e5m2, per-tensor scale) is supported. Use an fp16, bf16 or fp8_scaled "
                              f"file.")


def detect_dit(path: PathLike) -> WanConfig:
    """The ``WanConfig`` of a DiT file, from its header only (raises ``CheckpointError``)."""
    if _is_gguf(path):
        from .gguf import detect_gguf
        return detect_gguf(path)
    return inspect_dit(path).config


def _is_gguf(path: PathLike) -> bool:
    """GGUF files are told apart by their first bytes, not their name (``engine.gguf`` reads them)."""
    from .gguf import is_gguf
    return is_gguf(path)


def describe_file(path: PathLike) -> str:
    """One line saying what ``path`` is: a Wan 2.2 DiT with its variant and storage, or why not."""
    if _is_gguf(path):
        from .gguf import describe_gguf
        return describe_gguf(path)
    try:
        dit = inspect_dit(path)
    except CheckpointError as err:
        return str(err)
    c = dit.config
    prefix = f", key prefix {dit.prefix!r}" if dit.prefix else ""
    return (f"{Path(path).name}: Wan 2.2 DiT {c.variant} (dim {c.dim}, {c.num_layers} layers, ffn {c.ffn_dim}, "
            f"in {c.in_dim} / out {c.out_dim}), {dit.storage} weights{prefix}")


# ---------------------------------------------------------------- loading


def map_file(header: Header) -> torch.UntypedStorage:
    """The whole file as one private, read-only-in-practice memory map (pages load on first touch)."""
    return torch.UntypedStorage.from_file(str(header.path), shared=False, nbytes=header.size)


def tensor_view(storage: torch.UntypedStorage, info: TensorInfo) -> torch.Tensor:
    """A tensor over the mapped bytes; copied only when its offset is not aligned to its dtype."""
    dtype = ST_DTYPES[info.dtype]
    raw = torch.empty(0, dtype=torch.uint8).set_(storage, info.start, (info.end - info.start,))
    if info.start % dtype.itemsize:
        raw = raw.clone()
    return raw.view(dtype).view(info.shape)


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


def load_dit(path: PathLike, compute_dtype: Union[str, torch.dtype] = torch.float32,
             device: Union[str, torch.device] = "cpu", weight_dtype: Union[None, str, torch.dtype] = None) -> WanModel:
    """Load a Wan 2.2 DiT checkpoint.

    ``compute_dtype``: float32 / bfloat16 / float16 (or "fp32", "bf16", "fp16").
    ``weight_dtype``: None or "default" keeps every tensor as stored (fp8 stays fp8);
    "fp8_e4m3fn" / "fp8_e5m2" / "bf16" / "fp16" / "fp32" converts the Linear and patch
    weights to that dtype for memory (fp8 with a per-tensor scale). Other tensors
    (biases, norms, modulations) always keep their stored dtype.
    """
    if _is_gguf(path):
        from .gguf import load_gguf_dit
        return load_gguf_dit(path, compute_dtype, device, weight_dtype)
    compute = as_dtype(compute_dtype, COMPUTE_NAMES, "compute_dtype")
    target = as_dtype(weight_dtype, WEIGHT_NAMES, "weight_dtype")
    device = torch.device(device)
    dit = inspect_dit(path)
    if any(k.endswith(IGNORED_SUFFIXES[:2]) for k in dit.ignored):
        log.info("%s: input scales ignored (matmuls run in full precision)", dit.header.path.name)
    with torch.device("meta"):
        model = WanModel(dit.config, compute_dtype=compute or torch.float32)
    storage = map_file(dit.header)
    tensors = dit.header.tensors
    casting = {name for name, m in model.named_modules() if isinstance(m, CASTING_LAYERS)}
    for name, file_key in dit.params.items():
        module_name, attr = name.rsplit(".", 1) if "." in name else ("", name)
        module = model.get_submodule(module_name)
        view = tensor_view(storage, tensors[file_key])
        if module_name in casting and attr == "weight":
            scale_key = dit.scales.get(module_name)
            scale = None if scale_key is None else tensor_view(storage, tensors[scale_key])
            as_stored = keeps_stored_form(view.dtype, scale is not None, target)
            value, scale = hold_weight(view, scale, target, device)
            module.scale_weight = scale
        else:
            value, as_stored = view.to(device), True
        setattr(module, attr, nn.Parameter(value, requires_grad=False))
        if as_stored and _in_storage(view, storage):
            register_file_view(module, attr, view)  # offloading rebinds to these bytes (engine.streaming)
    return model


def keeps_stored_form(stored: torch.dtype, scaled: bool, target: Optional[torch.dtype]) -> bool:
    """Whether ``hold_weight`` keeps a weight's bytes as the file stores them."""
    return target is None or (target == stored and (not scaled or target in FP8_DTYPES))


def _in_storage(view: torch.Tensor, storage: torch.UntypedStorage) -> bool:
    """The view reads the mapped bytes (``tensor_view`` copies misaligned tensors)."""
    start = storage.data_ptr()
    return start <= view.data_ptr() < start + storage.nbytes()
