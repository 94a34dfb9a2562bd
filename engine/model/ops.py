"""Casting layers: weights stay in their stored dtype and are upcast per call.

Every Linear of ``WanModel`` (and the patch-embedding Conv3d) is one of the classes
below. They exist so a 14B expert can sit in memory as fp8 (or bf16) while each
matmul runs in the dtype of its *input*:

* the caller decides the compute dtype by the dtype of ``x`` (the model casts
  activations to ``model.compute_dtype``, or keeps them float32 in the fp32 regions of
  the spec: time embedding, time projection, head);
* the layer casts ``weight`` (and ``bias``) to ``x.dtype`` at call time and, when
  ``scale_weight`` is set, multiplies by it (fp8_scaled checkpoints: ``W = W_fp8 * s``).

Contract relied on by ``engine.weights.lora`` (do not break it):

* ``weight`` is an ``nn.Parameter`` (``requires_grad=False``) of any stored dtype,
  fp8 e4m3fn / e5m2 included; ``bias`` is an ``nn.Parameter`` or ``None``;
* ``scale_weight`` is a registered buffer holding ``None`` or a float32 scalar tensor
  (shape ``[]`` or ``[1]``) that multiplies the whole dequantised weight;
* all three are read at every call and nothing derived from them is cached, so a
  patcher may assign a new ``nn.Parameter`` to ``weight`` and a new tensor (or
  ``None``) to ``scale_weight``, and later assign the original objects back;
* ``CastLinear.lora_branches`` is a tuple of ``LoraBranch`` (empty unless a LoRA runs
  beside an fp8 or GGUF-quantized weight), read at every call and added to the output
  in ``x.dtype``: ``y += scale * (x @ down.T) @ up.T`` (low rank) or
  ``y += scale * x @ up.T`` (full rank, ``down`` None). A patcher assigns a new tuple and later the old one back; the
  branches follow the layer in ``.to()`` / ``.half()`` / ``.cuda()`` but are not in its
  ``state_dict`` (the checkpoint never contains them).
* ``weight_format`` (both classes) is None, or a :class:`WeightFormat` (the GGUF reader
  sets an ``engine.weights.ggml.QuantFormat``) when
  ``weight`` holds a GGUF file's quantized bytes (a uint8 ``nn.Parameter``, usually a view
  of the memory-mapped file): the layer then decodes those bytes into ``x.dtype`` at
  every call (``scale_weight`` stays None), and ``weight_shape`` is the real weight's
  shape. The bytes are an ordinary tensor, so ``.to()`` / ``_apply`` move them like any
  weight; floating-point casts (``.half()``) leave uint8 alone. A patcher never
  rewrites such a weight (LoRAs run as ``lora_branches``); it may swap ``weight`` and
  ``weight_format`` together and later put both back.

No device or dtype is fixed here: the layers follow wherever their tensors are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


class WeightFormat(Protocol):
    """How a layer's raw ``weight`` bytes encode the real weight (``engine.weights.ggml.QuantFormat``).

    Declared here rather than imported so the layers know only what they call: the model
    package sits below the weight readers and never imports them.
    """

    name: str
    shape: tuple[int, ...]

    def dequantize(self, raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor: ...


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


def layer_weight(layer: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """A casting layer's weight in ``dtype``: decoded GGUF bytes, or the upcast (scaled) weight."""
    fmt = layer.weight_format
    if fmt is not None:
        return fmt.dequantize(layer.weight, dtype)
    return cast_weight(layer.weight, layer.scale_weight, dtype)


def first_non_finite(model: nn.Module) -> Optional[str]:
    """Name of the first weight of ``model`` holding NaN/inf as its layer uses it, or None.

    Casting layers are judged by their decoded weight (GGUF bytes through their format, fp8
    through its scale), so NaN/inf GGUF scales and a tensor whose type was relabelled show up;
    other float parameters as they are. One tensor at a time in float32, stopping at the first:
    meant for the error path after sampling went non-finite, not for every run.
    """
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        casting = isinstance(module, CASTING_LAYERS) and getattr(module, "weight", None) is not None
        if casting and not bool(torch.isfinite(layer_weight(module, torch.float32)).all()):
            return prefix + "weight"
        for name, param in module.named_parameters(recurse=False):
            if (casting and name == "weight") or not param.is_floating_point():
                continue
            if not bool(torch.isfinite(param).all()):
                return prefix + name
    return None


def weight_shape(layer: nn.Module) -> torch.Size:
    """The shape of a casting layer's real weight (not of its GGUF bytes)."""
    fmt = getattr(layer, "weight_format", None)
    return torch.Size(fmt.shape) if fmt is not None else layer.weight.shape


def fp8_matmul(x2: torch.Tensor, weight: torch.Tensor, scale_weight: Optional[torch.Tensor]) -> torch.Tensor:
    """``x2 @ (weight * scale).T`` in ``x2.dtype`` via ``torch._scaled_mm`` (``engine.weights.fp8`` decides when).

    ``x2`` is ``[tokens, in]``; the activation is quantised on the fly to e4m3fn with one
    per-tensor scale (amax / 448), the fp8 weight is used as stored with its per-tensor
    scale (1 when unscaled). Accumulation is float32 inside the kernel.
    """
    fmax = torch.finfo(torch.float8_e4m3fn).max
    scale_x = (x2.abs().amax().float() / fmax).clamp_(min=torch.finfo(torch.float32).tiny)
    xq = (x2.float() / scale_x).clamp_(-fmax, fmax).to(torch.float8_e4m3fn)  # one rounding, to e4m3
    scale_w = scale_weight.float().reshape(()) if scale_weight is not None else torch.ones((), device=x2.device)
    return torch._scaled_mm(xq, weight.t(), scale_a=scale_x, scale_b=scale_w, out_dtype=x2.dtype)


def cast_bias(bias: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    if bias is None or bias.dtype == dtype:
        return bias
    return bias.to(dtype)


@dataclass(frozen=True)
class LoraBranch:
    """One LoRA update that runs beside a layer's weight instead of being merged into it.

    Low rank: ``scale * (x @ down.T) @ up.T`` with ``down`` [r, in], ``up`` [out, r]; full
    rank (a LoRA ``diff``): ``scale * x @ up.T`` with ``up`` [out, in] and ``down`` None.
    ``scale`` is strength * alpha / rank, kept apart so the tensors are held exactly as
    the LoRA file stores them.
    """

    up: torch.Tensor
    down: Optional[torch.Tensor]
    scale: float

    def factors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(left, right)`` in ``x.dtype`` with ``branch(x) = left @ right.T``; ``x`` [tokens, in].

        The scale goes onto the smaller operand: the [tokens, r] product for low rank,
        the [out, in] delta for full rank (smaller than the activations).
        """
        up = self.up.to(x.dtype)
        if self.down is None:
            return x, (up if self.scale == 1.0 else up * self.scale)
        return (x @ self.down.to(x.dtype).T).mul_(self.scale), up

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "LoraBranch":
        """The branch with ``fn`` applied to its tensors (how ``Module.to`` moves it)."""
        return LoraBranch(fn(self.up), None if self.down is None else fn(self.down), self.scale)

    def numel(self) -> int:
        return self.up.numel() + (0 if self.down is None else self.down.numel())


class CastLinear(nn.Module):
    """``y = x @ W.T + b`` computed in ``x.dtype`` whatever dtype ``W`` is stored in,
    plus any ``lora_branches`` (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None
        self.register_buffer("scale_weight", None)
        # A LoRA on an fp8 weight runs here instead of being merged: rounding the merged
        # weight back to fp8 would lose most of a typical LoRA's change (bench/lora_fp8.py).
        self.lora_branches: tuple[LoraBranch, ...] = ()
        self.weight_format: Optional[WeightFormat] = None
        # fp8 x fp8 matmul instead of the upcast (engine.weights.fp8; off unless switched on there).
        self.fp8_matmul = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp8_matmul and self.weight.dtype == torch.float8_e4m3fn:
            return self._fp8_forward(x)
        w = layer_weight(self, x.dtype)
        b = cast_bias(self.bias, x.dtype)
        if not self.lora_branches:
            return F.linear(x, w, b)
        # Bias and branches first, the main product last and into the same buffer: the
        # output is rounded once in bf16/fp16 (as a merged weight's would be), and the
        # only extra output-sized work is that one buffer's write and read.
        x2 = x.reshape(-1, x.shape[-1])
        (left, right), *rest = [branch.factors(x2) for branch in self.lora_branches]
        y = torch.mm(left, right.T) if b is None else torch.addmm(b, left, right.T)
        for left, right in rest:
            y.addmm_(left, right.T)
        return y.addmm_(x2, w.T).view(*x.shape[:-1], self.out_features)

    def _fp8_forward(self, x: torch.Tensor) -> torch.Tensor:
        # LoRA branches run from the unquantised x in x.dtype, exactly as on the upcast path.
        x2 = x.reshape(-1, x.shape[-1])
        y = fp8_matmul(x2, self.weight, self.scale_weight)
        if self.bias is not None:
            y = y.add_(cast_bias(self.bias, x.dtype))
        for branch in self.lora_branches:
            left, right = branch.factors(x2)
            y.addmm_(left, right.T)
        return y.view(*x.shape[:-1], self.out_features)

    def _apply(self, fn, *args, **kwargs):
        # Branches are plain attributes, not buffers (so no checkpoint or state_dict sees
        # them); move and cast them with the layer all the same.
        super()._apply(fn, *args, **kwargs)
        self.lora_branches = tuple(branch.apply(fn) for branch in self.lora_branches)
        return self

    def extra_repr(self) -> str:
        extra = f", lora_branches={len(self.lora_branches)}" if self.lora_branches else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"weight_dtype={_stored(self)}{extra}")


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
        self.weight_format: Optional[WeightFormat] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = layer_weight(self, x.dtype)
        return F.conv3d(x, w, cast_bias(self.bias, x.dtype), stride=self.kernel_size)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"weight_dtype={_stored(self)}")


def _stored(layer: nn.Module) -> str:
    fmt = layer.weight_format
    return f"gguf {fmt.name}" if fmt is not None else str(layer.weight.dtype)


CASTING_LAYERS = (CastLinear, CastConv3d)
