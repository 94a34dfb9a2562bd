"""fp8 x fp8 matmul for the transformer blocks of fp8 (e4m3fn) experts; off by default.

With ``fp8_matmul`` on (``engine.sampling.fast.apply_fast_options(..., fp8_matmul=True)``),
every ``CastLinear`` inside the DiT blocks whose weight is stored as float8_e4m3fn
(plain or fp8_scaled files, or ``weight_dtype=fp8_e4m3fn``) multiplies with
``torch._scaled_mm`` instead of upcasting its weight: the weight as stored with its
per-tensor scale, the activation quantised on the fly to e4m3fn with one per-tensor
scale (``engine.model.ops.fp8_matmul``). LoRA branches still run beside it from the
unquantised activation, so they stay exact. Layers outside the blocks (text and time
embeddings, head: the spec's float32 regions) keep the upcast path, and so do e5m2
weights.

It is off by default until it is measured on a GPU where it pays (fp8 tensor cores,
compute capability 8.9+): quantising the activation costs accuracy (about 2.7 %
relative L2 per matmul on random inputs, the rounding of e4m3's 3 mantissa bits), and
on CPU ``torch._scaled_mm`` is a slow reference kernel (about 3,000x slower than the
upcast at 256^3 with torch 2.13, ``bench/results_fast.md``), so it only makes sense on
fp8 tensor cores.

Before the first use on a (device, dtype) the fp8 product is checked once per process
against the upcast path on a small random layer (:func:`check_fp8_matmul`); if it
raises (an older GPU, a torch without fp8 kernels) or is further off than
``TOLERANCE``, the layers keep the upcast path and the log says why.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..model.ops import CastLinear, cast_weight, fp8_matmul, quantize_fp8

log = logging.getLogger(__name__)

# Relative L2 distance from the upcast path allowed on the check layer. Quantising the
# activation to e4m3fn (3 mantissa bits, per-tensor scale) gives 2.7e-2 on this input
# in fp32, bf16 and fp16 alike; a missing activation or weight scale is off by 100x,
# a transposed or mis-laid-out operand by order 1.
TOLERANCE = 6e-2
CHECK_SHAPE = (64, 256, 128)  # tokens, in, out: multiples of 16, as fp8 GPU kernels need

_checked: dict[tuple, Optional[str]] = {}


def check_fp8_matmul(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """None if the fp8 product may be used on ``device`` for ``dtype`` activations, else why not."""
    device = torch.device(device)
    key = (device, dtype)
    if key not in _checked:
        _checked[key] = _run_check(device, dtype)
        if _checked[key] is None:
            log.info("fp8 matmul passed its check against the upcast path on %s %s", device, dtype)
        else:
            log.warning("fp8 matmul is not used on %s %s: %s", device, dtype, _checked[key])
    return _checked[key]


def _run_check(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    if not hasattr(torch, "_scaled_mm"):
        return "this torch has no torch._scaled_mm"
    tokens, n_in, n_out = CHECK_SHAPE
    g = torch.Generator().manual_seed(4321)
    x = torch.randn(tokens, n_in, generator=g).to(device, dtype)
    weight, scale = quantize_fp8(torch.randn(n_out, n_in, generator=g) * n_in ** -0.5, torch.float8_e4m3fn)
    weight, scale = weight.to(device), scale.to(device)
    ref = F.linear(x, cast_weight(weight, scale, dtype))
    try:
        out = fp8_matmul(x, weight, scale)
    except Exception as err:  # any failure means "keep the upcast"; the reason goes to the log
        return f"torch._scaled_mm raised {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
    if tuple(out.shape) != tuple(ref.shape) or out.dtype != dtype:
        return f"it returned {tuple(out.shape)} {out.dtype}; expected {tuple(ref.shape)} {dtype}"
    err = float((out.float() - ref.float()).norm() / ref.float().norm())
    if not err <= TOLERANCE:
        return f"its result is {err:.3g} (relative L2) from the upcast path's, above the bound {TOLERANCE:g}"
    return None


def block_fp8_layers(model: nn.Module) -> list[CastLinear]:
    """The CastLinear layers inside ``model.blocks`` with float8_e4m3fn weights."""
    return [m for block in model.blocks for m in block.modules()
            if isinstance(m, CastLinear) and m.weight.dtype == torch.float8_e4m3fn]


def set_fp8_matmul(model: nn.Module, enabled: bool) -> int:
    """Switch the fp8 product of ``model``'s block layers on or off (it is checked at the first forward).

    Returns how many layers it applies to (0 for a model without e4m3fn weights).
    """
    model.fp8_matmul = bool(enabled)
    layers = block_fp8_layers(model)
    if not enabled:
        for layer in layers:
            layer.fp8_matmul = False
    if not hasattr(model, "_fp8_hook"):
        model._fp8_hook = model.register_forward_pre_hook(_prepare)
    return len(layers)


def _prepare(model: nn.Module, args: tuple) -> None:
    # Before the blocks run (and outside any compiled block): check once, then set the
    # layers; layers LoRA patched or reloaded since are picked up here too.
    if not model.fp8_matmul:
        return
    use = check_fp8_matmul(model.device, model.compute_dtype) is None
    for layer in block_fp8_layers(model):
        layer.fp8_matmul = use
