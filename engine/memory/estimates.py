"""What a run needs in device memory: the budget a user asks for, and the activations a step takes.

* :func:`parse_budget` reads a weight budget as users write it ("auto", "12", "12.5 GB")
  and rejects what cannot be one (negative, NaN, infinite, not a number) with a
  :class:`BudgetError` that names the value.
* :func:`activation_bytes` estimates the peak memory one DiT forward adds on top of its
  weights, for a latent size, frame count, compute dtype and guidance. The weight
  budget ``auto`` is "free device memory minus this"; :func:`ffn_chunk_tokens` (the
  FFN chunking of ``engine.model.dit``) is the term of it that bounds the FFN.
* :func:`vae_decode_bytes` / :func:`auto_tile_size`: the same for a VAE decode, and the
  largest decode tile that fits when whole frames do not.

The DiT estimate counts the tensors the code in ``engine.model.dit`` keeps alive at its peak
(see the function); it is checked against measured CPU peaks in ``bench/bench_memory.py``.
The VAE decode estimate is fitted to measured CPU peaks (``bench/bench_vae_memory.py``)
so that it bounds each of them. Both are in ``bench/results_memory.md``. They are estimates: the CUDA
caching allocator and fused kernels' workspaces add a few percent on a GPU.
"""
from __future__ import annotations

import math
import re
from typing import Optional, Union

import torch

from ..errors import public

GIB = 1024 ** 3
MIB = 1024 ** 2
AUTO = "auto"
# Headroom on top of the counted tensors: allocator rounding and fragmentation, kernel
# workspaces, the small per-step tensors (timesteps, sigmas, the solver's history).
SLACK = 1.15
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|nan|[-+]?inf(?:inity)?)\s*(gb|gib|g)?\s*$",
                     re.IGNORECASE)


@public
class BudgetError(ValueError):
    """A memory budget that cannot be used; the message names the value and what would work."""


BudgetSpec = Union[str, float, int, None]


def parse_budget(value: BudgetSpec) -> Union[str, float, None]:
    """``"auto"``, ``None`` (no budget: the whole model on the device) or a size in GiB.

    Accepts ``"auto"``, ``"none"``/``"off"``/``""`` (no budget), numbers and strings such
    as ``"12"``, ``"12.5"``, ``"12 GB"``. GB here means GiB, as ComfyUI and nvidia-smi
    count. Raises :class:`BudgetError` for negative, zero, NaN, infinite and unreadable values.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text in ("", "none", "off"):
            return None
        match = _NUMBER.match(text)
        if not match:
            raise BudgetError(f"memory budget {value!r} is not a size; write auto, or a number of GB such as 12 "
                              f"or 12.5 (or none for no budget)")
        number = float(match.group(1))
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BudgetError(f"memory budget {value!r} is not a size; pass 'auto' or a number of GB")
    else:
        number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise BudgetError(f"memory budget {value!r} is not a finite number; use auto or a number of GB such as 12")
    if number <= 0:
        raise BudgetError(f"memory budget {value!r} must be a positive number of GB (the device memory the "
                          f"expert's weights may use), or auto")
    return number


# ---------------------------------------------------------------- DiT activations


def tokens(config, frames: int, height: int, width: int) -> int:
    """DiT tokens of a latent ``[*, C, frames, height, width]`` (2x2 patches)."""
    return frames * (height // 2) * (width // 2)


def ffn_chunk_tokens(config, length: int) -> int:
    """Tokens per FFN call: enough that the ``[tokens, ffn_dim]`` hidden is no larger than the
    ``[length, dim]`` residual stream, and at least 512 (fewer only loses speed)."""
    return max(512, length * config.dim // config.ffn_dim)


def activation_bytes(config, frames: int, height: int, width: int, compute_dtype: torch.dtype = torch.bfloat16,
                     batch: int = 1, cfg: float = 1.0, guidance_batch: int = 1,
                     ffn_chunk: Optional[int] = None) -> int:
    """Peak bytes one DiT forward adds on top of its weights (an estimate, see the module doc).

    ``frames, height, width``: the latent (not pixel) size; ``batch``: videos at once.
    ``cfg`` != 1 adds the conditional velocity kept while the unconditional pass runs;
    ``guidance_batch`` is how many guidance passes run in one forward (1: one after the
    other, as ``engine.sampling.loop.guided_velocity`` does; 2 if they are batched).

    What is counted, per token of the ``B * L`` tokens (``D`` = dim, ``s`` = compute
    itemsize, ``r`` = 8 for fp32 compute's float64 RoPE, else 4):

    * the float32 residual stream, ``4 D``, alive throughout;
    * self-attention at its peak: the norm output (``4 D``, float32), q, k, v, the
      attention output and its transposed copy (``5 s D``), the RoPE temporaries of
      one of q/k (``2 r D``, input and rotated copy);
    * or the FFN, over chunks of ``ffn_chunk_tokens``: norm and modulated input
      (``(4 + s) D``), hidden and GELU output (``2 s F``), output (``s D``);
    * the RoPE table (``r * 64`` per token), the text context (512 rows, k and v);
    * two compute-dtype copies of the largest Linear weight (the per-call upcast of an
      fp8 / fp16 weight and its rescaled copy).
    """
    itemsize = torch.empty(0, dtype=compute_dtype).element_size()
    rope = 8 if compute_dtype == torch.float32 else 4
    b = batch * guidance_batch
    length = tokens(config, frames, height, width)
    dim, ffn = config.dim, config.ffn_dim
    stream = b * length * dim * 4
    attn = b * length * dim * (4 + 5 * itemsize + 2 * rope)
    chunk = ffn_chunk if ffn_chunk else ffn_chunk_tokens(config, length)
    chunk = min(chunk, length) if ffn_chunk != 0 else length
    ffn_peak = b * chunk * (dim * (4 + 2 * itemsize) + 2 * itemsize * ffn)
    fixed = length * (config.head_dim // 2) * 2 * rope + b * config.text_len * dim * itemsize * 3
    latent = batch * config.out_dim * frames * height * width * 4 * (3 if cfg != 1.0 else 2)
    # A weight stored in another dtype than the compute one is cast per call (and rescaled
    # for scaled fp8): two compute-dtype copies of the largest Linear for a moment.
    cast = 2 * itemsize * max(ffn * dim, config.text_dim * dim, 6 * dim * dim)
    return int(SLACK * (stream + max(attn, ffn_peak) + fixed + latent + cast))


# ---------------------------------------------------------------- VAE decode

# Peak bytes of one decode (a tile or whole frames) = fixed + per pixel, per VAE version and
# compute itemsize, for the released decoder widths (dec_dim 96 for Wan 2.1, 256 for Wan 2.2).
# Decoding runs one latent frame (4 video frames) at a time, so neither term depends on the
# video length (measured: 5 and 13 frames peak within 5 MiB of each other). The per-pixel
# term is the full-resolution end of the decoder: the causal caches (2 frames per 3x3x3
# conv: 9,458 of the ~21,300 bytes per fp32 pixel of Wan 2.1, 7,138 of Wan 2.2's ~20,100), the
# residual block in flight (its input, the norm output, the 6-frame padded input of the conv
# and its output), the upsampler's nearest-2x copy and the convolution's scratch. In 2-byte
# dtypes RMSNorm still works in float32, so they need a little more than half of fp32.
# Per pixel: 1.05 x the slope of the peak of the live tensors. Fixed: the least that bounds
# every measured peak by 5 %; on CPU it is mostly glibc keeping freed heap memory (the same
# decode measures up to 235 MiB more or less from run to run). Fitted in bench/results_memory.md
# ("VAE decode estimate"): bench/bench_vae_memory.py, data in bench/results_vae_memory.jsonl,
# which tests/test_memory.py checks the estimate against. On a GPU cuDNN needs no im2col-style
# scratch but may take a workspace of its own; that is not measured (no GPU here).
_VAE_DECODE_FIT = {  # (version, itemsize): (fixed bytes, bytes per pixel); bench_vae_memory.py --fit
    ("2.1", 4): (404 * MIB, 22197),
    ("2.1", 2): (786 * MIB, 11436),
    ("2.2", 4): (269 * MIB, 20169),
    ("2.2", 2): (467 * MIB, 10012),
}
_VAE_REAL_DEC_DIM = {"2.1": 96, "2.2": 256}


def vae_decode_bytes(config, height: int, width: int, dtype: torch.dtype = torch.float32) -> int:
    """Peak bytes a decode of ``height x width`` pixel frames (one tile or a whole frame) adds
    on the VAE's device, the decoded video aside (the node assembles it on ComfyUI's
    intermediate device). An upper bound fitted to measurements (``_VAE_DECODE_FIT``); a
    decoder narrower or wider than the released one scales the per-pixel term."""
    version = getattr(config, "version", "2.1")
    itemsize = torch.empty(0, dtype=dtype).element_size()
    fixed, per_pixel = _VAE_DECODE_FIT[(version, 2 if itemsize <= 2 else 4)]
    scale = itemsize / 4 if itemsize > 4 else 1  # float64: twice the fp32 figure
    width_ratio = getattr(config, "dec_dim", _VAE_REAL_DEC_DIM[version]) / _VAE_REAL_DEC_DIM[version]
    return int(fixed + height * width * per_pixel * width_ratio * scale)


def auto_tile_size(config, height: int, width: int, available: int, dtype: torch.dtype = torch.float32,
                   stride: int = 8, overlap: int = 64) -> int:
    """0 (whole frames) when a whole-frame decode fits in ``available`` bytes, else the largest
    square tile (a multiple of 32 px, above ``overlap``) that does, at least the smallest such."""
    if vae_decode_bytes(config, height, width, dtype) <= available:
        return 0
    step = max(32, stride)
    size = (max(height, width) // step) * step
    floor = (overlap // step + 1) * step
    while size > floor and vae_decode_bytes(config, min(size, height), min(size, width), dtype) > available:
        size -= step
    return max(size, floor)


def gib(n: float) -> str:
    """A byte count for messages: GiB, or MiB below 1 GiB."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"
