"""GGUF (Q8_0, Q4_K) versions of the toy experts, written by the pack's own writer.

Why here: the toy's quality table compares GGUF files with the fp16 files they come from, so the
quantization must be a real one. The ``gguf`` package quantizes Q8_0 (and Q4_0/1, Q5_0/1) but not the
K types; :func:`quantize_q4_k` is a Q4_K quantizer for that. It is a tool of the toy and the
benchmarks, not of the engine (which only decodes, ``engine.weights.ggml``).

Q4_K (the layout ``engine.weights.ggml._q4_k`` decodes, as ggml does): super-blocks of 256 weights
in 8 sub-blocks of 32; a sub-block's weight is ``d * sc * q - dmin * m`` with a 4-bit code ``q``,
6-bit ``sc`` and ``m`` and float16 ``d`` and ``dmin`` per super-block. The scheme is min/max per
sub-block: the offset ``dmin * m`` is the sub-block's minimum (or 0 when every weight is positive:
the offset can only lower) rounded *up* to the 6-bit grid, the step ``d * sc`` is the range from
there to the maximum over 15 rounded *up*, so the grid always covers the sub-block and every weight
is at most half a step from its decoded value (``tests/test_toy_quantize.py`` checks that bound and
that the step is at most one 6-bit grid unit above the ideal ``range / 15``). No search for
better scales (llama.cpp's ``make_qkx2_quants`` does one); min/max is the plain reference scheme.

:func:`write_expert_gguf` writes a toy expert (a safetensors file) in city96's layout for
ComfyUI-GGUF, with the types city96's ``llama-quantize`` patch (ComfyUI-GGUF ``tools/lcpp.patch``)
gives a Wan model: the embeddings, time projection, head and modulations are not quantized (F16, or
F32 for 1-D and small tensors as ``convert.py`` writes them; the 5-D patch embedding in F32 with its
5-D shape, as ``fix_5d_tensors.py`` leaves it), and a K-type tensor whose rows are not a multiple of
256 falls back to F16. The toy's dim is 128, so in a Q4_K file only the FFN output weights
(``ffn.2``, rows of 512) are Q4_K; :func:`write_expert_gguf` reports the types it used.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Union

import numpy as np

QK_K = 256
K_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
# city96's patch: Wan tensors whose names contain these are never quantized
NOT_QUANTIZED = ("modulation", "patch_embedding.", "text_embedding.", "time_projection.", "time_embedding.",
                 "img_emb.", "head.")
QTYPES = ("Q8_0", "Q4_K")


def _half_up(value: np.ndarray) -> np.ndarray:
    """``value`` (float32, >= 0) as float16, rounded up where rounding to nearest went down."""
    half = value.astype(np.float16)
    low = half.astype(np.float32) < value
    half[low] = np.nextafter(half[low], np.float16(np.inf))
    if not np.isfinite(half).all():
        raise ValueError(f"a Q4_K super-block scale {float(value.max())} does not fit in float16")
    return half


def quantize_q4_k(w: np.ndarray) -> np.ndarray:
    """``w`` (float, last dimension a multiple of 256) as Q4_K bytes, ``[..., last // 256 * 144]`` uint8."""
    w = np.asarray(w, dtype=np.float32)
    if w.shape[-1] % QK_K:
        raise ValueError(f"Q4_K needs rows of a multiple of {QK_K} weights; got shape {list(w.shape)}")
    if not np.isfinite(w).all():
        raise ValueError("Q4_K: the tensor holds non-finite values")
    sub = w.reshape(-1, 8, 32)
    offset = -np.minimum(sub.min(axis=2), 0.0)  # [n, 8], >= 0: w = step * q - offset
    dmin = _half_up(offset.max(axis=1) / 63)  # [n]
    dmin32 = dmin.astype(np.float32)[:, None]
    m = np.ceil(np.divide(offset, dmin32, out=np.zeros_like(offset), where=dmin32 > 0))
    low = dmin32 * m  # the decoded offset, >= offset
    need = (sub.max(axis=2) + low) / 15  # the step that reaches the maximum from -low
    d = _half_up(need.max(axis=1) / 63)
    d32 = d.astype(np.float32)[:, None]
    sc = np.ceil(np.divide(need, d32, out=np.zeros_like(need), where=d32 > 0))
    step = (d32 * sc)[:, :, None]
    q = np.divide(sub + low[:, :, None], step, out=np.zeros_like(sub), where=step > 0)
    q = np.clip(np.rint(q), 0, 15).astype(np.uint8)  # [n, 8, 32]
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    packed = np.concatenate([(sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6),
                             (m[:, :4] & 63) | ((m[:, 4:] >> 4) << 6),
                             (sc[:, 4:] & 15) | ((m[:, 4:] & 15) << 4)], axis=1)
    # byte 32 c + k holds weight k of sub-block 2c (low nibble) and of sub-block 2c + 1 (high nibble)
    nibbles = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(-1, 128)
    blocks = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2),
                             packed, nibbles], axis=1)
    return blocks.reshape(*w.shape[:-1], w.shape[-1] // QK_K * 144)


def quantize(w: np.ndarray, kind: str) -> np.ndarray:
    """``w`` as GGUF data of type ``kind``: float arrays for F32 / F16, encoded uint8 bytes otherwise."""
    import gguf

    w = np.asarray(w, dtype=np.float32)
    if kind == "F32":
        return w
    if kind == "F16":
        return w.astype(np.float16)
    if kind == "Q4_K":
        return quantize_q4_k(w)
    if kind in ("Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1"):
        return gguf.quants.quantize(w, gguf.GGMLQuantizationType[kind])
    raise ValueError(f"GGUF type {kind!r} cannot be written; expected F32, F16, Q4_K, Q8_0, Q5_0/1 or Q4_0/1")


def city96_wan_type(key: str, shape: tuple[int, ...], qtype: str) -> str:
    """The type a Wan tensor ``key`` of ``shape`` gets in city96's ``qtype`` conversion (module docstring)."""
    from ..engine.testing.tiny_gguf import city96_type

    if city96_type(key, shape, qtype) == "F32" or len(shape) != 2:
        return "F32"  # 1-D, small, modulation; and the 5-D patch embedding (kept F32 in 5-D)
    if any(part in key for part in NOT_QUANTIZED):
        return "F16"
    if qtype in K_TYPES and shape[-1] % QK_K:
        return "F16"
    return qtype


def write_expert_gguf(source: Union[str, os.PathLike], out: Union[str, os.PathLike],
                      qtype: str = "Q4_K") -> dict[str, int]:
    """Write the expert in safetensors file ``source`` as a city96-layout GGUF ``out`` of ``qtype``.

    Returns how many weights each GGUF type holds (``{"Q4_K": ..., "F16": ..., "F32": ...}``).
    """
    from safetensors.numpy import load_file

    from ..engine.testing.tiny_gguf import write_gguf

    if qtype not in QTYPES:
        raise ValueError(f"qtype {qtype!r} is not one the toy writes; expected one of {QTYPES}")
    tensors, counts = {}, Counter()
    for key, value in load_file(str(source)).items():
        kind = city96_wan_type(key, value.shape, qtype)
        tensors[key] = (quantize(value, kind), kind)
        counts[kind] += value.size
    write_gguf(Path(out), tensors, arch="wan", metadata={"wan22duo_toy": f"{qtype} of {Path(source).name}"})
    return dict(counts)
