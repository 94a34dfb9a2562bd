"""Tiny random-weight Wan 2.2 DiT checkpoints for tests, the demo and benchmarks.

``write_tiny_dit`` writes a ``.safetensors`` file with the real key names and layout
of one variant (spec §6.1) at a small size: by default dim 256 (2 heads of the real
head dim 128), ffn 512, 2 layers and the real text_dim 4096. Weights are random and
scaled so activations and outputs stay of order 1 (a zero-initialised head, as in the
reference's training init, would make every output 0 and every test pass).

Storage forms (``storage``):

* ``"fp32"``, ``"fp16"``, ``"bf16"``: every tensor in that dtype;
* ``"fp8_e4m3fn"``, ``"fp8_e5m2"``: Linear weights cast to fp8 directly (no scale),
  everything else bf16, like a ``weight_dtype=fp8`` export;
* ``"fp8_scaled"`` (e4m3fn) and ``"fp8_e5m2_scaled"``: ComfyUI's scaled fp8, Linear
  weights quantised per tensor (``scale = amax / fp8_max``), everything else fp16.
  ``scale_format="scale_weight"`` writes the legacy layout (``<layer>.scale_weight``,
  a ``scaled_fp8`` marker, optional ``<layer>.scale_input`` of 1.0);
  ``scale_format="weight_scale"`` the newer one (``<layer>.weight_scale``,
  ``<layer>.comfy_quant`` JSON, optional ``<layer>.input_scale``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

import torch

from ..model.dit import VARIANTS, WanConfig
from ..model.ops import quantize_fp8

STORAGES = ("fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2", "fp8_scaled", "fp8_e5m2_scaled")
PLAIN_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FP8 = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2,
       "fp8_scaled": torch.float8_e4m3fn, "fp8_e5m2_scaled": torch.float8_e5m2}
CHANNELS = {variant: dims for dims, variant in VARIANTS.items()}


def tiny_config(variant: str = "t2v_a14b", dim: int = 256, ffn_dim: int = 512, num_layers: int = 2,
                text_dim: int = 4096, freq_dim: int = 256) -> WanConfig:
    """A small ``WanConfig`` with the channel counts of ``variant``."""
    if variant not in CHANNELS:
        raise ValueError(f"variant {variant!r} is unknown; expected one of {sorted(CHANNELS)}")
    in_dim, out_dim = CHANNELS[variant]
    return WanConfig(dim=dim, ffn_dim=ffn_dim, num_layers=num_layers, in_dim=in_dim, out_dim=out_dim,
                     text_dim=text_dim, freq_dim=freq_dim)


def linear_shapes(cfg: WanConfig) -> dict[str, tuple[int, int]]:
    """Every Linear layer name -> (out, in); these are the layers fp8 files quantise."""
    d, f = cfg.dim, cfg.ffn_dim
    shapes = {"text_embedding.0": (d, cfg.text_dim), "text_embedding.2": (d, d),
              "time_embedding.0": (d, cfg.freq_dim), "time_embedding.2": (d, d),
              "time_projection.1": (6 * d, d), "head.head": (cfg.out_dim * 4, d)}
    for i in range(cfg.num_layers):
        for attn in ("self_attn", "cross_attn"):
            for p in "qkvo":
                shapes[f"blocks.{i}.{attn}.{p}"] = (d, d)
        shapes[f"blocks.{i}.ffn.0"] = (f, d)
        shapes[f"blocks.{i}.ffn.2"] = (d, f)
    return shapes


def random_state_dict(cfg: WanConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 weights under the checkpoint key names, scaled for order-1 activations."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float = 1.0, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std + mean

    d = cfg.dim
    sd = {"patch_embedding.weight": randn(d, cfg.in_dim, 1, 2, 2, std=(4 * cfg.in_dim) ** -0.5),
          "patch_embedding.bias": randn(d, std=0.1)}
    for name, (out_f, in_f) in linear_shapes(cfg).items():
        sd[f"{name}.weight"] = randn(out_f, in_f, std=in_f ** -0.5)
        sd[f"{name}.bias"] = randn(out_f, std=0.1)
    for i in range(cfg.num_layers):
        sd[f"blocks.{i}.modulation"] = randn(1, 6, d, std=d ** -0.5)
        for attn in ("self_attn", "cross_attn"):
            sd[f"blocks.{i}.{attn}.norm_q.weight"] = randn(d, std=0.1, mean=1.0)
            sd[f"blocks.{i}.{attn}.norm_k.weight"] = randn(d, std=0.1, mean=1.0)
        sd[f"blocks.{i}.norm3.weight"] = randn(d, std=0.1, mean=1.0)
        sd[f"blocks.{i}.norm3.bias"] = randn(d, std=0.1)
    sd["head.modulation"] = randn(1, 2, d, std=d ** -0.5)
    return dict(sorted(sd.items()))


def convert_storage(sd: dict[str, torch.Tensor], cfg: WanConfig, storage: str,
                    scale_format: str = "scale_weight", scale_input: bool = False) -> dict[str, torch.Tensor]:
    """The float32 state dict ``sd`` in one of the ``STORAGES`` forms (see the module doc)."""
    if storage in PLAIN_DTYPES:
        return {k: v.to(PLAIN_DTYPES[storage]) for k, v in sd.items()}
    if storage not in FP8:
        raise ValueError(f"storage {storage!r} is unknown; expected one of {STORAGES}")
    if scale_format not in ("scale_weight", "weight_scale"):
        raise ValueError(f"scale_format {scale_format!r} is unknown; expected 'scale_weight' or 'weight_scale'")
    fp8, scaled = FP8[storage], storage.endswith("_scaled")
    weights = {f"{name}.weight" for name in linear_shapes(cfg)}
    out = {k: v.to(torch.float16 if scaled else torch.bfloat16) for k, v in sd.items() if k not in weights}
    for key in sorted(weights):
        layer = key[: -len(".weight")]
        if not scaled:
            fmax = torch.finfo(fp8).max
            out[key] = sd[key].clamp(-fmax, fmax).to(fp8)
            continue
        out[key], scale = quantize_fp8(sd[key], fp8)
        if scale_format == "scale_weight":
            out[f"{layer}.scale_weight"] = scale
            if scale_input:
                out[f"{layer}.scale_input"] = torch.ones(())
        else:
            out[f"{layer}.weight_scale"] = scale
            if scale_input:
                out[f"{layer}.input_scale"] = torch.ones(())
            blob = json.dumps({"format": str(fp8).replace("torch.", "")}).encode()
            out[f"{layer}.comfy_quant"] = torch.tensor(list(blob), dtype=torch.uint8)
    if scaled and scale_format == "scale_weight":
        out["scaled_fp8"] = torch.empty(0, dtype=fp8)
    return out


def write_tiny_dit(path: Union[str, os.PathLike], variant: str = "t2v_a14b", storage: str = "fp32",
                   prefix: str = "", seed: int = 0, dim: int = 256, ffn_dim: int = 512, num_layers: int = 2,
                   text_dim: int = 4096, scale_format: str = "scale_weight", scale_input: bool = False) -> Path:
    """Write a random tiny Wan 2.2 DiT to ``path`` and return the path.

    ``prefix`` (e.g. ``"model.diffusion_model."``) is put before every key, the
    ``scaled_fp8`` marker included, as ComfyUI's checkpoint saver does.
    """
    from safetensors.torch import save_file

    cfg = tiny_config(variant, dim=dim, ffn_dim=ffn_dim, num_layers=num_layers, text_dim=text_dim)
    sd = convert_storage(random_state_dict(cfg, seed), cfg, storage, scale_format, scale_input)
    sd = {prefix + k: v.contiguous() for k, v in sd.items()}
    path = Path(path)
    save_file(sd, str(path), metadata={"format": "pt"})
    return path
