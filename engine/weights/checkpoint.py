"""Load Wan 2.2 DiT checkpoints from ``.safetensors``, memory-mapped and strictly checked.

GGUF files (told apart by their first bytes, not their name) are read by
``engine.weights.gguf``; ``detect_dit``, ``describe_file`` and ``load_dit`` hand them over,
so callers need not care which it is. What both readers share (key checks, the config
from shapes, ``CheckpointError``, holding tensors) is ``engine.weights.dit_file``, below both.

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
from ..model.dit import WanConfig, WanModel
from ..model.ops import CASTING_LAYERS
from .safetensors_header import ST_DTYPES, Header, TensorInfo, clip, quote, quote_list, what_is
from ..memory.streaming import register_file_view
from .gguf import describe_gguf, detect_gguf, is_gguf, load_gguf_dit
from .dit_file import (COMPUTE_NAMES, EXPECTED, WEIGHT_NAMES, CheckpointError, as_dtype,
                       config_from_shapes, hold_weight, identify_foreign, in_storage, keeps_stored_form,
                       map_file, raise_if_mismatch, strip_prefix)

log = logging.getLogger("wan22duo")

PathLike = Union[str, os.PathLike]

SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
IGNORED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
MARKER = "scaled_fp8"


# ---------------------------------------------------------------- safetensors header


def sniff(path: Path) -> Optional[str]:
    """What a non-safetensors file looks like from its first bytes, or None; a GGUF gets the DiT hint."""
    what = what_is(path)
    if what is not None and what.startswith("a GGUF file"):
        return ("a GGUF file; Wan 2.2 diffusion models in GGUF load with Wan22DuoExpertLoader / Wan22DuoTI2VLoader, "
                "other GGUF models with ComfyUI-GGUF")
    return what


def read_header(path: PathLike) -> Header:
    """Parse and strictly check a safetensors header (``engine.weights.safetensors_header``); no tensor data read."""
    return safetensors_header.read_header(path, CheckpointError, EXPECTED, sniff)


# ---------------------------------------------------------------- what a file is


# ---------------------------------------------------------------- config and plan


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
    raise_if_mismatch(name, config, missing, unexpected, misshaped)
    return dit


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
    if is_gguf(path):
        return detect_gguf(path)
    return inspect_dit(path).config


def describe_file(path: PathLike) -> str:
    """One line saying what ``path`` is: a Wan 2.2 DiT with its variant and storage, or why not."""
    if is_gguf(path):
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


def tensor_view(storage: torch.UntypedStorage, info: TensorInfo) -> torch.Tensor:
    """A tensor over the mapped bytes; copied only when its offset is not aligned to its dtype."""
    dtype = ST_DTYPES[info.dtype]
    raw = torch.empty(0, dtype=torch.uint8).set_(storage, info.start, (info.end - info.start,))
    if info.start % dtype.itemsize:
        raw = raw.clone()
    return raw.view(dtype).view(info.shape)


def load_dit(path: PathLike, compute_dtype: Union[str, torch.dtype] = torch.float32,
             device: Union[str, torch.device] = "cpu", weight_dtype: Union[None, str, torch.dtype] = None) -> WanModel:
    """Load a Wan 2.2 DiT checkpoint.

    ``compute_dtype``: float32 / bfloat16 / float16 (or "fp32", "bf16", "fp16").
    ``weight_dtype``: None or "default" keeps every tensor as stored (fp8 stays fp8);
    "fp8_e4m3fn" / "fp8_e5m2" / "bf16" / "fp16" / "fp32" converts the Linear and patch
    weights to that dtype for memory (fp8 with a per-tensor scale). Other tensors
    (biases, norms, modulations) always keep their stored dtype.
    """
    if is_gguf(path):
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
        if as_stored and in_storage(view, storage):
            register_file_view(module, attr, view)  # offloading rebinds to these bytes (engine.memory.streaming)
    return model


