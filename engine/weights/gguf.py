"""Load Wan 2.2 DiT experts from GGUF files (city96's layout for ComfyUI-GGUF), memory-mapped.

A GGUF file is a header (metadata key/values and a tensor table) followed by the tensor
data, each tensor stored in a GGML type: F32 / F16 / BF16, or a quantized block format
(Q8_0, Q4_K, ...: see ``engine.weights.ggml``). The header is parsed by
``engine.weights.gguf_header`` (plain binary parsing, no pickle, no code execution; every declared
count is checked against the file's size first, so a hostile header cannot hang the loader or the
models-folder route); the ``gguf`` package supplies the GGML type table. The data is mapped like a
safetensors file (``dit_file.map_file``), so nothing is read until used.

What a loaded expert holds:

* every quantized Linear weight stays quantized: its layer's ``weight`` is a uint8 view
  of the file's bytes and ``weight_format`` says how to decode it (``engine.model.ops``), so
  the layer decodes it at each call, on the compute device, into the compute dtype, and
  the resident cost of the expert is the file's size. Moving the model (``.to(device)``)
  copies those raw bytes to the device, no more;
* F32 / F16 / BF16 tensors (city96 keeps biases, norms, modulations and the 5-D patch
  embedding in F32, and small weights in F16) are plain tensors over the mapping, as
  from a safetensors file; a quantized tensor that is not a Linear / Conv weight (rare)
  is decoded once into float32 at load;
* ``weight_dtype`` other than the default decodes the weights at load into that dtype
  instead (faster per step, costs the dequantized size).

city96's conventions: tensor names are the checkpoint keys (optionally prefixed with
``model.diffusion_model.``); ``general.architecture`` is ``"wan"``; a tensor whose
stored shape is not its real one has the real shape in ``comfy.gguf.orig_shape.<name>``
(an INT32 array, outermost dimension first). GGUF lists dimensions innermost first, so
the torch shape is the stored one reversed.

Every failure raises ``GGUFError`` (a ``CheckpointError``) naming the file.
"""
from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from . import ggml
from .dit_file import (COMPUTE_NAMES, EXPECTED, WEIGHT_NAMES, CheckpointError, as_dtype, config_from_shapes,
                       hold_weight, identify_foreign, in_storage, map_file, raise_if_mismatch, strip_prefix)
from ..model.dit import WanConfig, WanModel
from ..model.ops import CASTING_LAYERS
from .gguf_header import (ARRAY, MAGIC, MAX_SHAPE_ITEMS, GGUFError, GGUFMetadata, TensorEntry,
                          UnsupportedQuantization, parse_gguf_header)
from .safetensors_header import clip, quote
from ..memory.streaming import register_file_view

log = logging.getLogger("wan22duo")

PathLike = Union[str, os.PathLike]
ARCH_KEY = "general.architecture"
ORIG_SHAPE = "comfy.gguf.orig_shape."
TEXT_ARCHS = {"t5", "t5encoder", "llama", "qwen2", "qwen2vl", "qwen3", "qwen3vl", "umt5", "gemma", "gemma2",
              "gemma3", "bert", "clip"}
SUPPORTED = ggml.SUPPORTED


def is_gguf(path: PathLike) -> bool:
    """Whether the file starts with the GGUF magic (whatever its name)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


# ---------------------------------------------------------------- header


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    type: str  # GGML type name: "Q4_K", "F32", ...
    shape: tuple[int, ...]  # the real (torch-order) shape
    start: int  # absolute byte offsets in the file
    end: int


@dataclass
class GGUFHeader:
    path: Path
    size: int
    arch: Optional[str]
    tensors: dict[str, GGUFTensor]


def read_gguf_header(path: PathLike) -> GGUFHeader:
    """Parse a GGUF header and check every tensor's type, rows and extent against its shape and the file.

    The parse is bounded (``engine.weights.gguf_header``): no count the file's bytes do not back is
    followed, so a damaged or hostile header costs time and memory linear in its real size.
    """
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"{clip(str(path))}: no such file. {EXPECTED}")
    meta = parse_gguf_header(path)
    arch = meta.string(ARCH_KEY)
    tensors: dict[str, GGUFTensor] = {}
    for entry in meta.tensors:
        if entry.name in tensors:
            raise GGUFError(f"{clip(path.name)}: tensor {quote(entry.name)} appears twice in the tensor table; the "
                            "file is damaged. Convert or download it again.")
        tensors[entry.name] = _tensor(meta, entry)
    _check_extents(path, tensors)
    return GGUFHeader(path, meta.size, arch, tensors)


def _tensor(meta: GGUFMetadata, entry: TensorEntry) -> GGUFTensor:
    """One tensor table entry as a :class:`GGUFTensor` (type name, real shape, absolute byte range)."""
    name = clip(meta.path.name)
    kind, block, block_bytes = _ggml_type(meta, entry)
    stored = tuple(reversed(entry.dims))
    if entry.dims and entry.dims[0] % block:
        raise GGUFError(f"{name}: tensor {quote(entry.name)} ({kind}) has rows of {entry.dims[0]} weights, not a whole "
                        f"number of {kind} blocks of {block}; the file is damaged. Convert or download it again.")
    shape = _orig_shape(meta, entry.name) or stored
    if math.prod(shape) != math.prod(stored):
        raise GGUFError(f"{name}: tensor {quote(entry.name)} is stored with shape {list(stored)} but its "
                        f"{quote(ORIG_SHAPE + entry.name)} metadata says {list(shape)} ({math.prod(shape)} elements, "
                        f"not {math.prod(stored)}); the file is damaged. Convert or download it again.")
    start = meta.data_start + entry.offset
    end = start + math.prod(stored) // block * block_bytes
    if end > meta.size:
        raise GGUFError(f"{name} is a truncated or damaged GGUF file: tensor {quote(entry.name)} ({kind}, shape "
                        f"{list(shape)}) needs bytes {start}..{end} but the file has {meta.size}. Download or copy it "
                        "again.")
    return GGUFTensor(entry.name, kind, shape, start, end)


def _ggml_type(meta: GGUFMetadata, entry: TensorEntry) -> tuple[str, int, int]:
    """(name, weights per block, bytes per block) of the entry's GGML type, from the ``gguf`` package's table."""
    import gguf

    try:
        kind = gguf.GGMLQuantizationType(entry.type_id)
    except ValueError:
        raise UnsupportedQuantization(
            f"{clip(meta.path.name)}: tensor {quote(entry.name)} has GGML type id {entry.type_id}, which the installed "
            f"gguf package does not know (a newer or damaged file). Supported types: {', '.join(SUPPORTED)}."
        ) from None
    block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
    return kind.name, block, block_bytes


def _orig_shape(meta: GGUFMetadata, name: str) -> Optional[tuple[int, ...]]:
    key = ORIG_SHAPE + name
    value = meta.ints(key, MAX_SHAPE_ITEMS)
    if value is None:
        return None
    if not value or min(value) <= 0:
        shown = value if value else meta.values[key].type_name + (f" of {meta.values[key].count} items"
                                                                   if meta.values[key].type == ARRAY else "")
        raise GGUFError(f"{clip(meta.path.name)}: metadata {key} is {shown}, expected an array of at most "
                        f"{MAX_SHAPE_ITEMS} positive integers (the tensor's real shape)")
    return tuple(value)


def _check_extents(path: Path, tensors: dict[str, GGUFTensor]) -> None:
    """No tensor's bytes (from its type and shape) may run into the next tensor's.

    The reader itself refuses data that runs past the end of the file (a truncated file) and
    rows that are not a whole number of blocks.
    """
    ordered = sorted(tensors.values(), key=lambda t: t.start)
    for t, after in zip(ordered, ordered[1:]):
        if t.end > after.start:
            raise GGUFError(f"{clip(path.name)}: tensor {quote(t.name)} claims shape {list(t.shape)} ({t.type}, "
                            f"{t.end - t.start} bytes) but only {after.start - t.start} bytes lie before the next "
                            f"tensor {quote(after.name)}; its size disagrees with its shape, so the file is damaged.")


# ---------------------------------------------------------------- what the file is


@dataclass
class GGUFDit:
    header: GGUFHeader
    config: WanConfig
    prefix: str
    params: dict[str, str]  # model parameter name -> tensor name in the file
    casting: set[str] = field(default_factory=set)  # names of the casting layers' weights

    @property
    def storage(self) -> str:
        """The tensor types of the Linear weights with their counts: "GGUF Q4_K (150), Q6_K (28), F16 (2)"."""
        counts = Counter(self.header.tensors[self.params[k]].type for k in sorted(self.casting))
        return "GGUF " + ", ".join(f"{kind} ({n})" for kind, n in counts.most_common())


def inspect_gguf(path: PathLike) -> GGUFDit:
    """Read and check a GGUF DiT's header (no tensor data); raise ``GGUFError`` if it is not one."""
    header = read_gguf_header(path)
    name = header.path.name
    _check_arch(header)
    prefix, by_key = strip_prefix(header.tensors)
    foreign = identify_foreign(by_key)
    if foreign:
        raise GGUFError(f"{clip(name)} is a GGUF of {foreign}. {EXPECTED}")
    _check_types(header)
    shapes = {k: header.tensors[f].shape for k, f in by_key.items()}
    try:
        config = config_from_shapes(shapes, name)
    except CheckpointError as err:
        raise GGUFError(str(err)) from None
    with torch.device("meta"):
        meta = WanModel(config)
    expected = {n: tuple(p.shape) for n, p in meta.named_parameters()}
    casting = {f"{n}.weight" for n, m in meta.named_modules() if isinstance(m, CASTING_LAYERS)}
    params = {k: f for k, f in by_key.items() if k in expected}
    unexpected = sorted(set(by_key) - set(expected))
    misshaped = [f"{k} is {list(shapes[k])}, expected {list(expected[k])}" for k in params if shapes[k] != expected[k]]
    try:
        raise_if_mismatch(name, config, sorted(set(expected) - set(params)), unexpected, misshaped)
    except CheckpointError as err:
        raise GGUFError(str(err)) from None
    return GGUFDit(header, config, prefix, params, casting & set(params))


def _check_arch(header: GGUFHeader) -> None:
    arch, name = header.arch, header.path.name
    if arch in (None, "wan", "pig", "cow"):
        return  # no architecture (stable-diffusion.cpp, or the placeholders of early converters): the names decide
    if arch in TEXT_ARCHS:
        raise GGUFError(f"{clip(name)} is a text encoder GGUF (architecture {quote(arch)}), not a diffusion model; load a "
                        f"umT5 GGUF with ComfyUI-GGUF's CLIPLoaderGGUF (type wan) from the text_encoders folder. "
                        f"{EXPECTED} (or its GGUF conversion)")
    raise GGUFError(f"{clip(name)} is a GGUF of architecture {quote(arch)}, not Wan ('wan'); this loader reads only Wan 2.2 "
                    f"diffusion models. {EXPECTED} (or its GGUF conversion)")


def _check_types(header: GGUFHeader) -> None:
    bad = {t.name: t.type for t in header.tensors.values() if t.type not in SUPPORTED}
    if bad:
        shown = ", ".join(f"{quote(k)} ({v})" for k, v in sorted(bad.items())[:6]) + (" ..." if len(bad) > 6 else "")
        raise UnsupportedQuantization(
            f"{clip(header.path.name)} stores {len(bad)} tensor(s) in type(s) {', '.join(sorted(set(bad.values())))}, "
            f"which this loader cannot decode: {shown}. Supported types: {', '.join(SUPPORTED)}. Use a file in one "
            f"of those (Q8_0, Q6_K, Q5_K_M, Q4_K_M, ... conversions).")


def detect_gguf(path: PathLike) -> WanConfig:
    return inspect_gguf(path).config


def describe_gguf(path: PathLike) -> str:
    try:
        dit = inspect_gguf(path)
    except CheckpointError as err:
        return str(err)
    c = dit.config
    return (f"{Path(path).name}: Wan 2.2 DiT {c.variant} (dim {c.dim}, {c.num_layers} layers, ffn {c.ffn_dim}, "
            f"in {c.in_dim} / out {c.out_dim}), {dit.storage} weights, {dit.header.size / 2**20:.1f} MiB file")


def gguf_weight_bytes(path: PathLike, weight_dtype: Optional[torch.dtype] = None) -> int:
    """Bytes the weights take once loaded: the tensor data as stored, or decoded to ``weight_dtype``."""
    header = read_gguf_header(path)
    if weight_dtype is None:
        return sum(t.end - t.start for t in header.tensors.values())
    return sum(math.prod(t.shape) * weight_dtype.itemsize for t in header.tensors.values())


# ---------------------------------------------------------------- loading


def load_gguf_dit(path: PathLike, compute_dtype: Union[str, torch.dtype] = torch.float32,
                  device: Union[str, torch.device] = "cpu",
                  weight_dtype: Union[None, str, torch.dtype] = None) -> WanModel:
    """Load a Wan 2.2 DiT from a GGUF file (see the module docstring); arguments as ``checkpoint.load_dit``."""

    compute = as_dtype(compute_dtype, COMPUTE_NAMES, "compute_dtype")
    target = as_dtype(weight_dtype, WEIGHT_NAMES, "weight_dtype")
    device = torch.device(device)
    dit = inspect_gguf(path)
    log.info("%s: %s weights, %s", dit.header.path.name, dit.storage,
             "kept quantized" if target is None else f"decoded to {target} at load")
    with torch.device("meta"):
        model = WanModel(dit.config, compute_dtype=compute or torch.float32)
    storage = map_file(dit.header)
    for name, file_key in dit.params.items():
        info = dit.header.tensors[file_key]
        module_name, attr = name.rsplit(".", 1) if "." in name else ("", name)
        module = model.get_submodule(module_name)
        raw = torch.empty(0, dtype=torch.uint8).set_(storage, info.start, (info.end - info.start,))
        view = None  # the file's bytes, when the parameter holds exactly them (engine.memory.streaming)
        if name in dit.casting:
            value, module.scale_weight, module.weight_format = _hold_layer_weight(raw, info, target, device)
            if target is None or (info.type in ggml.DENSE and ggml.DENSE[info.type] == target):
                view = raw if module.weight_format is not None else _dense_view(raw, info)
        elif info.type in ggml.DENSE:
            view = _dense_view(raw, info)
            value = view.to(device)
        else:  # a quantized norm / bias / modulation: small, decoded once
            value = ggml.dequantize(raw.to(device), info.type, info.shape, torch.float32)
        setattr(module, attr, nn.Parameter(value, requires_grad=False))
        if view is not None and in_storage(view, storage):
            register_file_view(module, attr, view)  # offloading rebinds to the mapping instead of copying
    return model


def _dense_view(raw: torch.Tensor, info: GGUFTensor) -> torch.Tensor:
    dtype = ggml.DENSE[info.type]
    if info.start % dtype.itemsize:
        raw = raw.clone()
    return raw.view(dtype).view(info.shape)


def _hold_layer_weight(raw: torch.Tensor, info: GGUFTensor, target: Optional[torch.dtype], device: torch.device):
    """(weight, scale_weight, weight_format) for a casting layer: the bytes kept, or decoded to ``target``
    (an fp8 target gets a per-tensor scale, as in ``dit_file.hold_weight``)."""
    if info.type in ggml.DENSE:
        return (*hold_weight(_dense_view(raw, info), None, target, device), None)
    if target is None:
        return raw.to(device), None, ggml.QuantFormat(info.type, info.shape)
    full = ggml.dequantize(raw.to(device), info.type, info.shape, torch.float32)
    return (*hold_weight(full, None, target, device), None)
