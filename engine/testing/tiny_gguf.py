"""Tiny random Wan 2.2 DiT experts as GGUF files, in city96's layout, for tests and benchmarks.

``write_tiny_gguf`` writes the same random weights as ``engine.testing.tiny.write_tiny_dit``
(same ``seed`` and sizes give the same float32 state dict, ``tiny_state_dict``) with the
``gguf`` package's writer, the way city96's converter lays them out for ComfyUI-GGUF:
``general.architecture = "wan"``; 1-D tensors, tensors of at most 1024 elements and the
``modulation`` parameters in F32; the 5-D patch embedding in F32 with its 5-D shape
(``patch="5d"``, what ``fix_5d_tensors.py`` writes) or flattened to 2-D in F16 with its
real shape in ``comfy.gguf.orig_shape.<name>`` (``patch="orig_shape"``, where ``types`` may
quantize it); every other
weight in ``qtype`` (per-key ``types`` override it, as a Q4_K_M file mixes in Q6_K).

``gguf.quants`` can quantize F16, BF16, Q8_0, Q4_0/1 and Q5_0/1 but not the K types, so
for those the Linear weights are random *valid* blocks instead (``random_blocks``):
random codes and sub-block scales, finite float16 super-block scales chosen so that the
decoded weights have the spread ``random_state_dict`` gives, and mins that centre each
sub-block near zero. Such a file is a real GGUF of that type, only not a quantization of
the float32 weights.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import torch

from .tiny import random_state_dict, tiny_config

QUANTIZABLE = ("F32", "F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
K_TYPES = ("Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K")
SMALL = 1024  # city96 keeps tensors of at most this many elements in F32
# byte offsets of the float16 super-block scale d and min dmin (None: no min), and dmin / d
_K_LAYOUT = {"Q2_K": (80, 82, 2.0), "Q3_K": (108, None, 0.0), "Q4_K": (0, 2, 8.0), "Q5_K": (0, 2, 16.0),
             "Q6_K": (208, None, 0.0)}


def tiny_state_dict(variant: str = "t2v_a14b", seed: int = 0, **sizes) -> dict[str, torch.Tensor]:
    """The float32 weights ``write_tiny_gguf`` starts from (``sizes``: dim, ffn_dim, num_layers, text_dim)."""
    return random_state_dict(tiny_config(variant, **sizes), seed)


def write_gguf(path: Union[str, os.PathLike], tensors: Mapping[str, tuple[np.ndarray, str]],
               arch: Optional[str] = "wan", shapes: Optional[Mapping[str, tuple[int, ...]]] = None,
               metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write ``{name: (data, type)}`` to a GGUF file: float data for F32/F16, encoded uint8 bytes otherwise.

    ``shapes`` adds ``comfy.gguf.orig_shape.<name>`` entries; ``arch`` None writes no
    architecture key; ``metadata`` adds string key/values.
    """
    import gguf

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), arch=arch or "")
    if arch is None:  # the writer always adds the key; drop it for an architecture-less file
        writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)
    for key, value in (metadata or {}).items():
        writer.add_string(key, value)
    for name, shape in (shapes or {}).items():
        writer.add_array("comfy.gguf.orig_shape." + name, list(shape))
    for name, (data, kind) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[kind])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def encode(w: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``w`` (float32, last dimension a whole number of blocks) as GGUF data of type ``kind``.

    Quantizable types are real quantizations of ``w``; K types are random valid blocks
    with the spread of ``w`` (see the module docstring).
    """
    import gguf

    if kind == "F32":
        return w.astype(np.float32)
    if kind == "F16":
        return w.astype(np.float16)
    if kind in QUANTIZABLE:
        return gguf.quants.quantize(w.astype(np.float32), gguf.GGMLQuantizationType[kind])
    if kind in K_TYPES:
        rows = int(np.prod(w.shape[:-1]))
        blocks = random_blocks(kind, rows * w.shape[-1] // 256, rng, std=float(w.std()))
        return blocks.reshape(*w.shape[:-1], -1)
    raise ValueError(f"type {kind!r} is unknown; expected one of {QUANTIZABLE + K_TYPES}")


def random_blocks(kind: str, n: int, rng: np.random.Generator, std: float = 1.0) -> np.ndarray:
    """``n`` random valid K-type blocks [n, bytes] whose decoded weights have about ``std``."""
    import gguf

    size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]][1]
    b = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    if kind in ("Q4_K", "Q5_K"):
        # eight 6-bit (scale, min) pairs; min = scale * mean code / (dmin / d) centres each group
        sc = rng.integers(1, 64, size=(n, 8))
        mn = np.rint(sc * (7.5 if kind == "Q4_K" else 15.5) / _K_LAYOUT[kind][2]).astype(np.int64)
        packed = np.concatenate([(sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6), (mn[:, :4] & 63) | ((mn[:, 4:] >> 4) << 6),
                                 (sc[:, 4:] & 15) | ((mn[:, 4:] & 15) << 4)], axis=1)
        b[:, 4:16] = packed.astype(np.uint8)
    elif kind == "Q2_K":
        sc = rng.integers(1, 16, size=(n, 16))
        mn = np.rint(sc * 1.5 / _K_LAYOUT[kind][2]).astype(np.int64)
        b[:, :16] = (sc | (mn << 4)).astype(np.uint8)
    d_at, dmin_at, ratio = _K_LAYOUT[kind]
    _put_half(b, d_at, 1.0)
    if dmin_at is not None:
        _put_half(b, dmin_at, ratio)
    spread = float(gguf.quants.dequantize(b, gguf.GGMLQuantizationType[kind]).std())
    factor = std / spread
    _put_half(b, d_at, factor)
    if dmin_at is not None:
        _put_half(b, dmin_at, ratio * factor)
    return b


def _put_half(blocks: np.ndarray, at: int, value: float) -> None:
    half = np.full(blocks.shape[0], value, dtype=np.float16)
    if not np.isfinite(half).all():
        raise ValueError(f"scale {value} does not fit in float16")
    blocks[:, at:at + 2] = half.view(np.uint8).reshape(-1, 2)


def city96_type(key: str, shape: tuple[int, ...], qtype: str) -> str:
    """The type city96's converter gives a tensor when quantizing a float32 model to ``qtype``."""
    if len(shape) == 1 or int(np.prod(shape)) <= SMALL or ".modulation" in key or key.endswith("modulation"):
        return "F32"
    return qtype


def write_tiny_gguf(path: Union[str, os.PathLike], variant: str = "t2v_a14b", qtype: str = "Q8_0",
                    seed: int = 0, types: Optional[Mapping[str, str]] = None, patch: str = "5d",
                    prefix: str = "", arch: Optional[str] = "wan", **sizes) -> Path:
    """Write a random tiny Wan 2.2 DiT (``engine.testing.tiny`` sizes, ``sizes`` as in ``tiny_config``) as GGUF."""
    if patch not in ("5d", "orig_shape"):
        raise ValueError(f"patch {patch!r} is unknown; expected '5d' or 'orig_shape'")
    sd = tiny_state_dict(variant, seed, **sizes)
    rng = np.random.default_rng(seed)
    tensors, shapes = {}, {}
    for key, value in sd.items():
        w = value.numpy()
        chosen = (types or {}).get(key)
        kind = chosen or city96_type(key, w.shape, qtype)
        if key == "patch_embedding.weight":
            if patch == "orig_shape":  # flattened to [dim, in * 4], F16 unless ``types`` says otherwise
                shapes[prefix + key] = w.shape
                w, kind = w.reshape(w.shape[0], -1), chosen or "F16"
            else:
                kind = "F32"
        tensors[prefix + key] = (encode(w, kind, rng), kind)
    return write_gguf(path, tensors, arch=arch, shapes=shapes)
