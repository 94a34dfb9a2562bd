"""LoRA files for Wan 2.2 experts: read them, map their keys onto the model, patch and unpatch.

A LoRA file holds per-layer updates in one of several dialects (see ``split_key``):

* low rank: ``<layer>.lora_down.weight`` [r, in] and ``<layer>.lora_up.weight`` [out, r]
  (kohya / ComfyUI) or ``lora_A`` / ``lora_B`` (PEFT, diffusers), optional scalar
  ``<layer>.alpha``. The update is ``up @ down * alpha / r`` (``alpha`` missing: scale 1);
* full deltas: ``<layer>.diff`` (weight), ``<layer>.diff_b`` (bias), ``<block>.diff_m``
  (the block's ``modulation``), and PEFT's ``lora_B.bias`` (bias). The Lightning /
  lightx2v distillation LoRAs use these for norms, biases and modulations.

Layer names come with a prefix (``diffusion_model.``, ``model.diffusion_model.``,
``transformer.``, ``base_model.model.``, or ``lora_unet_`` with every dot turned into an
underscore) and in the original Wan naming or the diffusers one (spec §6.3), which is
mapped back. The model's parameter names equal the checkpoint keys, so a mapped name is
looked up directly.

Patching is in place and reversible: ``apply_loras`` replaces each touched parameter by
a new tensor and keeps the original tensor objects in a ``LoraBackup``; ``remove_loras``
puts those objects back, so the unpatched model is the original bit for bit.

An fp8 Linear weight is never touched: every LoRA update on it runs beside the weight at
call time (``engine.model.ops.CastLinear.lora_branches``), in the compute dtype, so the layer
gives ``x @ (W_fp8 * scale + delta).T + b`` up to that dtype's rounding. Merging instead
would round the merged weight back to fp8 and lose most of a typical LoRA's change
(bench/lora_fp8.py). A low-rank update costs its rank matrices; a full ``diff`` on an
fp8 Linear weight (rare) runs as a full-rank branch and costs its own size in the LoRA
file's precision plus one more matmul per call (exact, unlike re-quantizing, and never
larger in memory than the file's tensor). The branches hold the LoRA's tensors as the
file stores them, moved to the weight's device (not copied when already there).

A GGUF-quantized Linear weight (``weight_format`` set: the layer holds the file's quantized
bytes) is treated the same way: every update runs as a branch beside it, so the expert
keeps costing its file size and the LoRA is exact in the compute dtype (ComfyUI-GGUF
instead adds the patch into each freshly decoded weight at every call). A quantized
weight in a layer that has no branches (a patch embedding stored quantized, which
city96's files never do) cannot be patched and raises ``LoraError``. Shapes are checked
against the real weight's shape (``ops.weight_shape``), not the bytes'.

Everything else merges into the weight as ComfyUI does: non-fp8 weights (bf16/fp16/fp32)
and the full deltas on norms, biases and modulations. An fp8 weight in a layer without
branches (an fp8 patch-embedding conv, a foreign module) is merged and re-quantized with a
fresh per-tensor scale, round-to-nearest (``ops.quantize_fp8``), so a delta that grows the
weight cannot saturate; that loses part of a small change, as measured in the bench.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import public
from ..model.ops import CASTING_LAYERS, FP8_DTYPES, CastLinear, LoraBranch, quantize_fp8, weight_shape
from .safetensors_header import clip, quote, quote_list
from ..memory.streaming import forget_file_view

log = logging.getLogger("wan22duo")


@public
class LoraError(ValueError):
    """A LoRA file that cannot be applied to the given model; the message says why and what to do."""


# ---------------------------------------------------------------- reading


def read_lora(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` LoRA file, on the CPU, as stored."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _check_lora_file(path)
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise LoraError(
            f"{clip(path)} is not a readable safetensors file ({clip(str(exc))}); LoRAs must be .safetensors "
            f"files (convert .ckpt/.pt LoRAs first)"
        ) from None


def _check_lora_file(path: Union[str, os.PathLike]) -> str:
    """The path as a string, if it exists and is not a GGUF file (a common mix-up: GGUF holds models)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LoraError(f"LoRA file {path!r} does not exist; pick a file from ComfyUI's 'loras' folder")
    with open(path, "rb") as f:
        if f.read(4) == b"GGUF":
            raise LoraError(
                f"{clip(os.path.basename(path))} is a GGUF file; LoRAs are read from .safetensors files (the LoRA as "
                "published, e.g. wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors). A GGUF file holds a "
                "quantized model: load it with Wan22DuoExpertLoader or Wan22DuoTI2VLoader instead.")
    return path


def read_lora_header(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """The tensors of a LoRA file as shape-only ``meta`` tensors (the tiny ``alpha`` values real).

    Enough for ``plan_lora`` to check a file against a model without reading its data.
    """
    from safetensors import SafetensorError, safe_open

    path = _check_lora_file(path)
    try:
        with safe_open(path, framework="pt") as f:
            return {key: f.get_tensor(key) if key.endswith(".alpha")
                    else torch.empty(f.get_slice(key).get_shape(), device="meta") for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise LoraError(
            f"{clip(path)} is not a readable safetensors file ({clip(str(exc))}); LoRAs must be .safetensors "
            f"files (convert .ckpt/.pt LoRAs first)"
        ) from None


# ---------------------------------------------------------------- key mapping

# The tensor-name endings a LoRA file uses, and the role each plays.
ROLES = {
    "lora_down.weight": "down",
    "lora_up.weight": "up",
    "lora_A.weight": "down",
    "lora_B.weight": "up",
    "lora_B.bias": "diff_b",  # PEFT LoRA with bias: a full bias delta
    "alpha": "alpha",
    "diff": "diff",
    "diff_b": "diff_b",
    "diff_m": "diff_m",
}
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "unet.")
KOHYA_PREFIX = "lora_unet_"

# Diffusers names -> original Wan names (spec §6.3), applied to the part after "blocks.N."
DIFFUSERS_BLOCK = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn1.norm_q": "self_attn.norm_q",
    "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.norm_q": "cross_attn.norm_q",
    "attn2.norm_k": "cross_attn.norm_k",
    "norm2": "norm3",  # diffusers swapped the names of the affine cross-attn norm and the FFN norm
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
    "scale_shift_table": "modulation",
}
# ... and to top-level names.
DIFFUSERS_TOP = {
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
    "scale_shift_table": "head.modulation",
    "patch_embedding": "patch_embedding",
}
DIFFUSERS_MARKERS = ("attn1.", "attn2.", "condition_embedder.", "ffn.net.", "proj_out", "scale_shift_table")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def split_key(key: str) -> Optional[tuple[str, str]]:
    """``(layer name as written, role)`` for a LoRA tensor name, or None if it is not one."""
    for ending, role in ROLES.items():
        if key.endswith("." + ending):
            return key[: -len(ending) - 1], role
    # PEFT adapters saved with their adapter name: "<layer>.lora_A.<adapter>.weight"
    match = re.match(r"^(.+)\.lora_([AB])\.[^.]+\.(weight)$", key)
    if match:
        return match.group(1), "down" if match.group(2) == "A" else "up"
    return None


def _strip_prefix(name: str) -> str:
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _from_diffusers(name: str) -> str:
    match = _BLOCK.match(name)
    if match:
        index, rest = match.groups()
        for diffusers, original in DIFFUSERS_BLOCK.items():
            if rest == diffusers or rest.startswith(diffusers + "."):
                return f"blocks.{index}.{original}{rest[len(diffusers):]}"
        return name
    for diffusers, original in DIFFUSERS_TOP.items():
        if name == diffusers or name.startswith(diffusers + "."):
            return original + name[len(diffusers):]
    return name


class NameMap:
    """Resolves a LoRA layer name to a module path of ``model`` (``blocks.0.self_attn.q``)."""

    def __init__(self, model: nn.Module, diffusers: bool):
        self.diffusers = diffusers
        self.params = dict(model.named_parameters())
        self.params.update(dict(model.named_buffers()))
        # the real shape of every parameter: a GGUF weight's bytes have another one
        self.shapes = {name: p.shape for name, p in self.params.items()}
        for path, module in model.named_modules():
            if isinstance(module, CASTING_LAYERS) and f"{path}.weight" in self.shapes:
                self.shapes[f"{path}.weight"] = weight_shape(module)
        # every parameter's owner path plus every parameter itself (``blocks.0.modulation``)
        owners = {name.rpartition(".")[0] for name in self.params}
        self.paths = owners | set(self.params)
        self.kohya = {path.replace(".", "_"): path for path in self.paths}

    def resolve(self, name: str) -> Optional[str]:
        if name.startswith(KOHYA_PREFIX):
            return self.kohya.get(name[len(KOHYA_PREFIX):])
        name = _strip_prefix(name)
        if self.diffusers:
            name = _from_diffusers(name)
        return name if name in self.paths else None


def is_diffusers_naming(keys: Iterable[str]) -> bool:
    return any(marker in key for key in keys for marker in DIFFUSERS_MARKERS)


# ---------------------------------------------------------------- deltas


@dataclass
class Delta:
    """Everything one LoRA file contributes to one model parameter."""

    target: str  # the parameter, e.g. "blocks.0.self_attn.q.weight"
    layer: str  # the layer the LoRA names, e.g. "blocks.0.self_attn.q" (its alpha is keyed by it)
    keys: list[str] = field(default_factory=list)  # the LoRA tensor names it came from
    up: Optional[torch.Tensor] = None
    down: Optional[torch.Tensor] = None
    alpha: Optional[float] = None
    diff: Optional[torch.Tensor] = None

    def check(self, shape: torch.Size) -> None:
        """Raise ``LoraError`` unless this delta fits a parameter of ``shape``."""
        if (self.up is None) != (self.down is None):
            missing = "up (lora_up / lora_B)" if self.up is None else "down (lora_down / lora_A)"
            raise LoraError(f"LoRA tensors {quote_list(self.keys)} for {self.target!r} lack their {missing} half; "
                            f"the file is incomplete or damaged")
        if self.up is not None:
            # Conv layers (patch_embedding) store down as [r, in, kt, kh, kw] and up as [out, r, 1, 1, 1].
            rank, out_features = self.down.shape[0], self.up.shape[0]
            in_features = math.prod(self.down.shape[1:])
            if math.prod(self.up.shape[1:]) != rank:
                raise LoraError(
                    f"LoRA tensors {quote_list(self.keys)} disagree on the rank: up has shape {tuple(self.up.shape)}, "
                    f"down has shape {tuple(self.down.shape)}; the file is damaged or not a LoRA")
            if len(shape) < 2 or out_features != shape[0] or in_features != shape[1:].numel():
                raise self._shape_error("up @ down", (out_features, in_features), shape)
        if self.diff is not None and self.diff.numel() != shape.numel():
            raise self._shape_error("diff", self.diff.shape, shape)

    def add_to(self, value: torch.Tensor, strength: float) -> None:
        """``value += strength * delta`` in place (``value`` float32, shaped like the parameter)."""
        self.check(value.shape)
        if self.up is not None:
            down = self.down.to(value.device, torch.float32).flatten(1)
            up = self.up.to(value.device, torch.float32).flatten(1)
            scale = 1.0 if self.alpha is None else self.alpha / down.shape[0]
            value.view(up.shape[0], -1).addmm_(up, down, alpha=strength * scale)
        if self.diff is not None:
            value.add_(self.diff.to(value.device, torch.float32).reshape(value.shape), alpha=strength)

    def _shape_error(self, what: str, got: Sequence[int], shape: torch.Size) -> LoraError:
        return LoraError(
            f"LoRA key(s) {quote_list(self.keys)}: {what} has shape {tuple(got)} but the model's {self.target!r} has "
            f"shape {tuple(shape)}; this LoRA was made for a different model size (Wan 2.2 A14B vs TI2V-5B, "
            f"or a Wan 2.1 1.3B model)"
        )


def _target_of(path: str, role: str, params: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The parameter a (layer, role) pair updates, or None if the model has no such parameter."""
    if role == "diff_b":
        candidates = [f"{path}.bias"]
    elif role == "diff_m":
        candidates = [f"{path}.modulation"]
    else:  # a layer's weight, or a bare parameter such as blocks.0.modulation
        candidates = [f"{path}.weight", path]
    return next((name for name in candidates if name in params), None)


def plan_lora(lora: Mapping[str, torch.Tensor], model: nn.Module, name: str = "LoRA",
              warn: bool = True) -> list[Delta]:
    """Map every tensor of ``lora`` onto ``model``: one ``Delta`` per touched parameter.

    Raises ``LoraError`` if nothing matches (with a hint about what the file looks like)
    or a shape does not fit; warns, listing them, about tensors that match nothing.
    """
    parts = {key: split_key(key) for key in lora}
    if not any(parts.values()):
        raise LoraError(_not_a_lora_message(name, lora))
    names = NameMap(model, is_diffusers_naming(k for k, p in parts.items() if p))
    deltas: dict[str, Delta] = {}
    alphas: dict[str, float] = {}
    unknown: list[str] = []
    for key, part in parts.items():
        path = names.resolve(part[0]) if part else None
        target = _target_of(path, part[1], names.params) if path else None
        if part and part[1] == "alpha" and path:
            alphas[path] = _alpha(name, key, lora[key])
            continue
        if target is None:
            unknown.append(key)
            continue
        _check_finite(name, key, lora[key])
        delta = deltas.setdefault(target, Delta(target, path))
        delta.keys.append(key)
        role = part[1]
        if role in ("up", "down"):
            setattr(delta, role, lora[key])
        elif delta.diff is None:
            delta.diff = lora[key]
        else:  # two full deltas for one parameter (e.g. diff_b and lora_B.bias) simply add up
            delta.diff = delta.diff.float() + lora[key].float()
    if not deltas:
        raise LoraError(_no_match_message(name, list(lora), model))
    for delta in deltas.values():
        _finish(delta, alphas, names.shapes[delta.target])
    if unknown and warn:
        log.warning("Wan22Duo: %s: %d of %d tensors match no layer of this model and are ignored: %s",
                    clip(name), len(unknown), len(lora), quote_list(sorted(unknown), 20))
    return list(deltas.values())


def _alpha(name: str, key: str, tensor: torch.Tensor) -> float:
    """A LoRA's ``alpha`` as a float; NaN/inf or empty would silently scale the change wrongly."""
    if tensor.numel() == 0:
        raise LoraError(f"{clip(name)}: {quote(key)} holds no value; the file is damaged. Use another copy.")
    alpha = float(tensor.float().reshape(-1)[0])
    if not math.isfinite(alpha):
        raise LoraError(f"{clip(name)}: {quote(key)} is {alpha}, not a finite number, so the LoRA's scale "
                        f"alpha / rank is undefined; the file is damaged. Use another copy of the LoRA.")
    return alpha


def _check_finite(name: str, key: str, tensor: torch.Tensor) -> None:
    """Stop at planning, naming the tensor, rather than after the first sampling step with a NaN video."""
    if tensor.device.type == "meta" or not tensor.is_floating_point():
        return  # a header-only plan (shapes): the data is checked when the weights are read
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise LoraError(f"{clip(name)}: tensor {quote(key)} holds {bad} NaN/inf values of {tensor.numel()}; "
                        f"the file is damaged (or was saved after training diverged). Use another copy of the LoRA.")


def check_strength(strength, name: str = "LoRA") -> float:
    """``strength`` as a float; NaN/inf would turn every patched weight into NaN."""
    value = float(strength)
    if not math.isfinite(value):
        raise LoraError(f"{clip(name)}: strength {value} is not a finite number; use a value such as 1.0 "
                        f"(0 leaves the model unchanged).")
    return value


def _finish(delta: Delta, alphas: Mapping[str, float], shape: torch.Size) -> None:
    """Attach a delta's alpha and check it is complete and fits its parameter."""
    delta.alpha = alphas.get(delta.layer)
    delta.check(shape)


def _not_a_lora_message(name: str, lora: Mapping[str, torch.Tensor]) -> str:
    keys = sorted(lora)
    hint = ""
    if any(k.endswith("head.modulation") or k.endswith("patch_embedding.weight") for k in keys):
        hint = " It looks like a full Wan model checkpoint: load it with Wan22DuoExpertLoader instead."
    elif any(k.endswith(".hada_w1_a") or ".lokr_" in k for k in keys):
        hint = " It looks like a LyCORIS LoHa/LoKr file, which this node does not support."
    return (f"{clip(name)} is not a LoRA: none of its {len(keys)} tensors ends in lora_down/lora_up, lora_A/lora_B, "
            f"alpha, diff, diff_b or diff_m (first keys: {quote_list(keys[:5])}).{hint}")


def _no_match_message(name: str, keys: list[str], model: nn.Module) -> str:
    sample = sorted(keys)[:5]
    variant = getattr(getattr(model, "config", None), "variant", "Wan 2.2")
    hints = []
    if any(k.startswith(("lora_te", "text_encoder", "te.")) or ".encoder.block" in k or "text_model" in k
           for k in keys):
        hints.append("it looks like a text-encoder LoRA, which this node cannot apply")
    if any("k_img" in k or "v_img" in k or "img_emb" in k for k in keys):
        hints.append("it has Wan 2.1 I2V image-attention layers (k_img/v_img) that Wan 2.2 does not have")
    wan_like = ("blocks.", "blocks_", "text_embedding", "time_embedding", "time_projection", "head.head",
                "condition_embedder", "proj_out")
    foreign = ("double_blocks", "single_blocks", "transformer_blocks", "down_blocks", "input_blocks", "layers.")
    if any(f in k for k in keys for f in foreign) or not any(w in k for k in keys for w in wan_like):
        hints.append("its layer names are those of another model family (Flux, SD, HunyuanVideo...)")
    hint = "; ".join(hints) or "it was probably made for another model"
    return (f"{clip(name)} matches no layer of this {variant} model ({len(keys)} tensors, e.g. "
            f"{quote_list(sample)}): {hint}. "
            f"Use a LoRA trained for Wan 2.2 (or a Wan 2.1 14B LoRA on an A14B expert).")


# ---------------------------------------------------------------- patching


@dataclass
class LoraBackup:
    """The original value of every attribute ``apply_loras`` replaced, to put back: a tensor,
    None, or (for ``lora_branches``) the layer's previous tuple of branches."""

    originals: list[tuple[nn.Module, str, Any]] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)


LoraSource = Union[str, os.PathLike, Mapping[str, torch.Tensor]]
BRANCHES = "lora_branches"  # the CastLinear attribute runtime branches live in


def apply_loras(model: nn.Module, loras: Sequence[tuple[LoraSource, float]], *, keep_backup: bool = True,
                backup_device: Optional[Union[str, torch.device]] = "cpu",
                work_device: Optional[Union[str, torch.device]] = None, warn: bool = True) -> LoraBackup:
    """Patch ``model`` in place with ``(file or tensors, strength)`` pairs; return the backup.

    Deltas of all LoRAs are summed per parameter first, so chained LoRAs add up (a
    non-fp8 weight is rounded to its dtype once); on an fp8 Linear each LoRA becomes
    one more runtime branch, so a later call stacks on an earlier one. ``work_device``
    is where merge arithmetic runs (default: where each weight sits; pass a GPU to patch
    a CPU-resident expert fast). Originals are moved to ``backup_device`` (None: left
    where they are) so a GPU-resident expert does not hold two copies in GPU memory.
    ``keep_backup=False`` keeps no originals at all (the patched model is a private copy
    that is never unpatched, as in ``ModelHandle.derive``), so
    they are freed as soon as each layer is patched.
    """
    plans = []
    for source, strength in loras:
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "LoRA"
        if check_strength(strength, name) == 0.0:
            continue
        tensors = read_lora(source) if isinstance(source, (str, os.PathLike)) else source
        plans.append((plan_lora(tensors, model, name, warn=warn), float(strength)))
    by_target: dict[str, list[tuple[Delta, float]]] = {}
    for deltas, strength in plans:
        for delta in deltas:
            by_target.setdefault(delta.target, []).append((delta, strength))
    backup = LoraBackup()
    with torch.no_grad():
        try:
            for target, parts in by_target.items():
                _patch_one(model, target, parts, backup if keep_backup else None, backup_device, work_device)
        except BaseException:
            remove_loras(model, backup)  # never leave a half-patched model behind
            raise
    return backup


def remove_loras(model: nn.Module, backup: LoraBackup) -> None:
    """Undo ``apply_loras``: put the original tensors back, on the device the model is on now."""
    with torch.no_grad():
        for module, attr, original in reversed(backup.originals):
            if attr == BRANCHES:
                device = module.weight.device
                original = tuple(branch.apply(lambda t: t.to(device)) for branch in original)
            else:
                current = getattr(module, attr, None)
                if original is not None and current is not None and original.device != current.device:
                    original = original.to(current.device)
            _set(module, attr, original)
    backup.originals.clear()
    backup.targets.clear()


def _patch_one(model: nn.Module, target: str, parts: list[tuple[Delta, float]],
               backup: Optional[LoraBackup], backup_device, work_device) -> None:
    module_name, _, attr = target.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    weight = getattr(module, attr)
    if backup is not None:
        backup.targets.append(target)
    quantized = attr == "weight" and getattr(module, "weight_format", None) is not None
    if attr == "weight" and (weight.dtype in FP8_DTYPES or quantized) and isinstance(module, CastLinear):
        shape = weight_shape(module)
        branches = tuple(branch for delta, strength in parts for branch in _branches(delta, strength, weight, shape))
        _replace(module, BRANCHES, module.lora_branches + branches, backup, backup_device)
        return
    if quantized:
        raise LoraError(f"{target!r} holds GGUF {module.weight_format.name} bytes in a layer that cannot run a LoRA "
                        f"beside its weight; load the model with a weight_dtype such as bf16 to apply this LoRA")
    device = torch.device(work_device) if work_device is not None else weight.device
    scale_attr = "scale_weight" if attr == "weight" else None
    scale = getattr(module, scale_attr, None) if scale_attr else None
    value = weight.to(device=device, dtype=torch.float32, copy=True)  # never alias the original
    if scale is not None:
        value.mul_(scale.to(device, torch.float32))
    for delta, strength in parts:
        delta.add_to(value, strength)
    if weight.dtype in FP8_DTYPES:
        if not scale_attr or not hasattr(module, scale_attr):
            raise LoraError(f"{target!r} is stored as {weight.dtype} but its layer has no scale_weight, so "
                            f"the patched weight cannot be re-quantized; load the model with a non-fp8 weight_dtype")
        new_weight, new_scale = quantize_fp8(value, weight.dtype)
        if scale is not None:
            new_scale = new_scale.to(scale.dtype).reshape(scale.shape)
        _replace(module, scale_attr, new_scale.to(weight.device), backup, backup_device)
    else:
        new_weight = value.to(weight.dtype)
        if scale is not None:  # a scaled non-fp8 weight: fold the scale in
            _replace(module, scale_attr, None, backup, backup_device)
    _replace(module, attr, new_weight.to(weight.device), backup, backup_device)


def _branches(delta: Delta, strength: float, weight: torch.Tensor, shape: torch.Size) -> list[LoraBranch]:
    """One delta as runtime branches beside an fp8 or GGUF Linear ``weight`` of real ``shape``
    (see the module docstring).

    The factors stay in the LoRA file's dtype and scale; ``strength * alpha / rank`` goes
    into the branch's ``scale``, so nothing is rounded here.
    """
    delta.check(shape)
    out = []
    if delta.up is not None:
        down, up = delta.down.flatten(1).to(weight.device), delta.up.flatten(1).to(weight.device)
        rank_scale = 1.0 if delta.alpha is None else delta.alpha / down.shape[0]
        out.append(LoraBranch(up, down, strength * rank_scale))
    if delta.diff is not None:
        out.append(LoraBranch(delta.diff.reshape(shape).to(weight.device), None, strength))
    return out


def _replace(module: nn.Module, attr: str, value: Any, backup: Optional[LoraBackup], backup_device) -> None:
    if backup is None:
        _set(module, attr, value)
        return
    original = getattr(module, attr, None)
    if attr != BRANCHES and original is not None and backup_device is not None:
        original = original.to(backup_device)  # no copy when already there
    backup.originals.append((module, attr, original))
    _set(module, attr, value)


def _set(module: nn.Module, attr: str, value: Any) -> None:
    forget_file_view(module, attr)  # no longer the file's bytes: offloading must copy it (engine.memory.streaming)
    if attr in module._parameters:
        if value is not None and not isinstance(value, nn.Parameter):
            value = nn.Parameter(value, requires_grad=False)
        module._parameters[attr] = value
    elif attr in module._buffers:
        module._buffers[attr] = value
    else:
        setattr(module, attr, value)


# ---------------------------------------------------------------- lazy model handles


def with_lora(handle, path: Union[str, os.PathLike], strength: float):
    """A new ``ModelHandle`` that loads like ``handle`` and then applies one more LoRA.

    ``handle`` itself is untouched (ComfyUI caches node outputs, and two branches from one
    loader must not see each other's LoRAs). The chain of LoRAs is kept in
    ``info["loras"]`` and all of them are applied in one pass onto the unpatched root
    handle's model (``info["lora_base"]``), so chained LoRAs add up before a non-fp8
    weight is rounded once (fp8 Linears get one runtime branch per LoRA). The file is
    checked against the model's layer names and shapes now, from its header and the model
    config, so a wrong LoRA fails here rather than at sampling.
    """
    path = os.fspath(path)
    strength = check_strength(strength, os.path.basename(path))
    base = handle.info.get("lora_base", handle)
    loras = tuple(handle.info.get("loras", ())) + ((path, float(strength)),)
    skeleton = model_skeleton(handle.info.get("config"))
    if skeleton is not None:
        plan_lora(read_lora_header(path), skeleton, os.path.basename(path))

    def transform(module: nn.Module) -> None:
        apply_loras(module, loras, keep_backup=False, warn=skeleton is None)

    label = " + ".join(f"{os.path.basename(p)}@{s:g}" for p, s in loras)
    return base.derive(transform, loras=loras, lora_base=base, name=f"{base.name} + {label}")


def model_skeleton(config) -> Optional[nn.Module]:
    """The DiT for ``config`` on the ``meta`` device (names and shapes, no memory), or None."""
    if config is None:
        return None
    from ..model.dit import WanModel

    with torch.device("meta"):
        return WanModel(config)
