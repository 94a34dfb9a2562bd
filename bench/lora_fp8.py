"""How much of a LoRA survives being merged into an fp8 weight, and why engine/lora.py does not merge.

Since this measurement, a low-rank LoRA on an fp8 Linear runs beside the weight
(engine.ops.CastLinear lora_down/lora_up), which is exact; only a full ``diff`` delta on an
fp8 weight is still merged the "nearest" way measured below.

A random fp8-scaled 1024x1024 layer gets a rank-16 delta whose norm is a given fraction
of the weight's norm. The merged weight is re-quantized to fp8 e4m3fn with a fresh scale,
by round-to-nearest (what engine.lora does, via engine.ops.quantize_fp8) and by stochastic rounding (what ComfyUI
does), and for reference kept in bf16. Reported: the error of the layer's output change
``x @ (W' - W).T`` against the exact ``x @ delta.T``, relative to the latter (1.0 means the
LoRA's effect is as wrong as it is large). Run: .venv/bin/python bench/lora_fp8.py

Results (CPU, torch 2.13, seed 0), output-delta relative error:
    delta/|W|   nearest (ours)   stochastic   bf16
    0.005       0.98             4.0          0.32
    0.02        0.77             1.44         0.082
    0.10        0.27             0.37         0.017
    0.30        0.093            0.13         0.006
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from packpath import load_pack  # noqa: E402

load_pack()
from wan22duo.engine.ops import quantize_fp8  # noqa: E402

FP8 = torch.float8_e4m3fn


def stochastic_fp8(value: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dequantized stochastic rounding onto the same fresh-scale fp8 grid (for comparison only)."""
    finfo = torch.finfo(FP8)
    scale = value.abs().max() / finfo.max
    x = (value / scale).abs()
    _, exponent = torch.frexp(x)
    step = torch.ldexp(torch.ones_like(x), (exponent - 1).clamp(min=-6) - 3)
    low = torch.floor(x / step) * step
    up = torch.rand(x.shape, generator=generator) < (x - low) / step
    return torch.where(up, low + step, low).clamp(max=finfo.max).copysign(value) * scale


def main() -> None:
    torch.manual_seed(0)
    n = 1024
    q, s = quantize_fp8(torch.randn(n, n) * 0.02, FP8)
    weight = q.float() * s
    x = torch.randn(256, n)
    generator = torch.Generator().manual_seed(0)
    print("delta/|W|  nearest  stochastic  bf16")
    for fraction in (0.005, 0.02, 0.1, 0.3):
        delta = torch.randn(n, 16) @ torch.randn(16, n)
        delta *= fraction * weight.norm() / delta.norm()
        exact = x @ delta.T

        def error(merged: torch.Tensor) -> float:
            return ((x @ (merged - weight).T - exact).norm() / exact.norm()).item()

        q2, s2 = quantize_fp8(weight + delta, FP8)
        print(f"{fraction:<10} {error(q2.float() * s2):<8.3g} {error(stochastic_fp8(weight + delta, generator)):<11.3g} "
              f"{error((weight + delta).bfloat16().float()):.3g}")


if __name__ == "__main__":
    main()
