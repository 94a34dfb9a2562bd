"""Tiny LoRA files for tests and workflow checks, in every key dialect ``engine.weights.lora`` reads.

``write_tiny_lora(path, dit_path)`` reads the parameter names and shapes from a DiT file
(e.g. one written by ``engine.testing.tiny.write_tiny_dit``) and writes random low-rank updates for
its Linear layers, plus Lightning-style full deltas (``diff`` for norm weights, ``diff_b``
for biases, ``diff_m`` for block modulations) when ``full_deltas`` is set.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Union

import torch

from ..weights.lora import DIFFUSERS_BLOCK, DIFFUSERS_TOP

FORMATS = ("comfy", "kohya", "peft", "diffusers")
_CHECKPOINT_PREFIX = "model.diffusion_model."


def dit_shapes(dit_path: Union[str, os.PathLike]) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape from a DiT safetensors header (prefix stripped, fp8 scales dropped)."""
    from safetensors import safe_open

    shapes = {}
    with safe_open(os.fspath(dit_path), framework="pt") as f:
        for key in f.keys():
            name = key[len(_CHECKPOINT_PREFIX):] if key.startswith(_CHECKPOINT_PREFIX) else key
            if name.endswith(("scale_weight", "scale_input", "weight_scale", "input_scale", "comfy_quant")):
                continue
            shapes[name] = tuple(f.get_slice(key).get_shape())
    return shapes


def _to_diffusers(layer: str) -> str:
    for table, prefix in ((DIFFUSERS_BLOCK, "blocks."), (DIFFUSERS_TOP, "")):
        for diffusers, original in table.items():
            if prefix and layer.startswith(prefix):
                index, _, rest = layer[len(prefix):].partition(".")
                if rest == original or rest.startswith(original + "."):
                    return f"blocks.{index}.{diffusers}{rest[len(original):]}"
            elif not prefix and (layer == original or layer.startswith(original + ".")):
                return diffusers + layer[len(original):]
    return layer


def lora_key(layer: str, role: str, fmt: str) -> str:
    """The tensor name ``fmt`` uses for ``role`` (down/up/alpha/diff/diff_b/diff_m) of ``layer``."""
    low_rank = {"down": "lora_down.weight", "up": "lora_up.weight"}
    if fmt in ("peft", "diffusers"):
        low_rank = {"down": "lora_A.weight", "up": "lora_B.weight"}
    ending = low_rank.get(role, role)
    if fmt == "kohya":
        return f"lora_unet_{layer.replace('.', '_')}.{ending}"
    if fmt == "diffusers":
        return f"transformer.{_to_diffusers(layer)}.{ending}"
    return f"diffusion_model.{layer}.{ending}"


def make_tiny_lora(shapes: Mapping[str, Sequence[int]], fmt: str = "comfy", rank: int = 4,
                   alpha: Optional[float] = None, full_deltas: bool = False, seed: int = 0,
                   magnitude: float = 0.05, layers: Optional[Sequence[str]] = None) -> dict[str, torch.Tensor]:
    """LoRA tensors (float32) for the 2-D weights of ``shapes`` (all Linear layers, or ``layers``)."""
    if fmt not in FORMATS:
        raise ValueError(f"LoRA format {fmt!r} is not one of {FORMATS}")
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * magnitude

    tensors = {}
    linear = [name[:-len(".weight")] for name, shape in shapes.items() if name.endswith(".weight") and len(shape) == 2]
    for layer in (layers if layers is not None else linear):
        out_features, in_features = shapes[f"{layer}.weight"][:2]
        tensors[lora_key(layer, "down", fmt)] = rand(rank, in_features)
        tensors[lora_key(layer, "up", fmt)] = rand(out_features, rank)
        if alpha is not None:
            tensors[lora_key(layer, "alpha", fmt)] = torch.tensor(float(alpha))
    if full_deltas:
        for name, shape in shapes.items():
            layer, _, param = name.rpartition(".")
            if param == "bias":
                tensors[lora_key(layer, "diff_b", fmt)] = rand(*shape)
            elif param == "weight" and len(shape) == 1:  # norm_q, norm_k, norm3
                tensors[lora_key(layer, "diff", fmt)] = rand(*shape)
            elif param == "modulation" and layer.startswith("blocks."):
                tensors[lora_key(layer, "diff_m", fmt)] = rand(*shape)
    return tensors


def write_tiny_lora(path: Union[str, os.PathLike], dit_path: Union[str, os.PathLike], fmt: str = "comfy",
                    **options) -> dict[str, torch.Tensor]:
    """Write ``make_tiny_lora(dit_shapes(dit_path), fmt, **options)`` to ``path``; return the tensors."""
    from safetensors.torch import save_file

    tensors = make_tiny_lora(dit_shapes(dit_path), fmt, **options)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.fspath(path))
    return tensors
