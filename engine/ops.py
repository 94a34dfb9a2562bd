"""Casting layers: weights stay in their stored dtype and are upcast per call.

Every Linear of ``WanModel`` (and the patch-embedding Conv3d) is one of the classes
below. They exist so a 14B expert can sit in memory as fp8 (or bf16) while each
matmul runs in the dtype of its *input*:

* the caller decides the compute dtype by the dtype of ``x`` (the model casts
  activations to ``model.compute_dtype``, or keeps them float32 in the fp32 regions of
  the spec: time embedding, time projection, head);
* the layer casts ``weight`` (and ``bias``) to ``x.dtype`` at call time and, when
  ``scale_weight`` is set, multiplies by it (fp8_scaled checkpoints: ``W = W_fp8 * s``).

Contract relied on by ``engine.lora`` (do not break it):

* ``weight`` is an ``nn.Parameter`` (``requires_grad=False``) of any stored dtype,
  fp8 e4m3fn / e5m2 included; ``bias`` is an ``nn.Parameter`` or ``None``;
* ``scale_weight`` is a registered buffer holding ``None`` or a float32 scalar tensor
  (shape ``[]`` or ``[1]``) that multiplies the whole dequantised weight;
* all three are read at every call and nothing derived from them is cached, so a
  patcher may assign a new ``nn.Parameter`` to ``weight`` and a new tensor (or
  ``None``) to ``scale_weight``, and later assign the original objects back;
* ``CastLinear`` also has two non-persistent buffers, ``lora_down`` ``[r, in]`` and
  ``lora_up`` ``[out, r]`` (``None`` unless a LoRA runs beside an fp8 weight), read at
  every call: ``y += (x @ lora_down.T) @ lora_up.T``, the strength already folded in.

No device or dtype is fixed here: the layers follow wherever their tensors are.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def cast_weight(weight: torch.Tensor, scale_weight: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """The weight to multiply with, in ``dtype``: upcast and, for scaled fp8, rescaled.

    The scale is applied in ``dtype`` after the upcast, as ComfyUI dequantises; for
    float32 compute this is exact up to one rounding of the product.
    """
    w = weight if weight.dtype == dtype else weight.to(dtype)
    if scale_weight is not None:
        w = w * scale_weight.to(dtype)
    return w


def quantize_fp8(w: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled fp8: ``(w / s).to(dtype)`` with ``s = amax / fp8_max``; returns (q, s).

    ``s`` is a float32 0-dim tensor, so ``q.to(f32) * s`` gives ``w`` back up to fp8 rounding.
    The scale keeps small weights out of fp8's coarse subnormal range.
    """
    fmax = torch.finfo(dtype).max
    scale = (w.abs().max().float() / fmax).clamp(min=torch.finfo(torch.float32).tiny)
    q = (w.float() / scale).clamp_(-fmax, fmax).to(dtype)
    return q, scale.reshape(())


def cast_bias(bias: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    if bias is None or bias.dtype == dtype:
        return bias
    return bias.to(dtype)


class CastLinear(nn.Module):
    """``y = x @ W.T + b`` computed in ``x.dtype`` whatever dtype ``W`` is stored in."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None
        self.register_buffer("scale_weight", None)
        # A LoRA beside an fp8 weight runs here instead of being merged: rounding the merged
        # weight back to fp8 would lose most of a typical LoRA's change (bench/lora_fp8.py).
        self.register_buffer("lora_down", None, persistent=False)
        self.register_buffer("lora_up", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = cast_weight(self.weight, self.scale_weight, x.dtype)
        y = F.linear(x, w, cast_bias(self.bias, x.dtype))
        if self.lora_down is not None:
            y = y + F.linear(F.linear(x, self.lora_down.to(x.dtype)), self.lora_up.to(x.dtype))
        return y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight_dtype={self.weight.dtype}"


class CastConv3d(nn.Module):
    """A Conv3d with kernel == stride (patch embedding) under the same casting contract."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = tuple(kernel_size)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_channels), requires_grad=False)
        self.register_buffer("scale_weight", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = cast_weight(self.weight, self.scale_weight, x.dtype)
        return F.conv3d(x, w, cast_bias(self.bias, x.dtype), stride=self.kernel_size)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"weight_dtype={self.weight.dtype}")


CASTING_LAYERS = (CastLinear, CastConv3d)
