"""LoRAs on fp8 weights: merged and re-quantized (the old way) against run beside the weight (now).

engine/weights/lora.py no longer merges a LoRA into an fp8 Linear: ``CastLinear.lora_branches``
adds ``s * (x @ down.T) @ up.T`` at call time, in the compute dtype, and the fp8 weight is
never touched. This script measures what that buys and what it costs.

1. Accuracy. A random fp8-scaled (e4m3fn) 1024x1024 layer gets a rank-16 delta whose norm
   is a given fraction of the weight's norm (a typical LoRA changes a weight by 0.5-2 %).
   The error is that of the LoRA's effect on the layer output, relative to the effect
   ``x @ delta.T`` (1.0: the effect is as wrong as it is large).
   a) the merged weight alone, in exact arithmetic: re-quantized to fp8 with a fresh
      scale by round-to-nearest (what engine.weights.lora did, via ops.quantize_fp8) or by
      stochastic rounding (what ComfyUI does), or kept in bf16 (for reference);
   b) the layer output in the compute dtype against float64 ``x @ (W + delta).T + b``:
      the runtime branch, the fp8 merge run through the same layer, and ("floor") the
      unpatched layer against its own exact output, i.e. the rounding every bf16 layer
      has with or without a LoRA.
2. Speed. One 5120x5120 fp8 Linear (an A14B attention projection) on 1024 tokens, CPU,
   one thread, median of 5 calls, with and without a rank-64 branch.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/lora_fp8.py

Results (AMD EPYC, 2 shared cores, torch 2.13 CPU, seed 0):
  1a) merged weight, exact arithmetic
    delta/|W|  fp8 nearest  fp8 stochastic  bf16
    0.005      0.98         4.01            0.32
    0.02       0.77         1.44            0.082
    0.1        0.26         0.372           0.016
    0.3        0.093        0.131           0.0058
  1b) layer output in the compute dtype vs float64
    delta/|W|  fp32: branch  fp8 merge  bf16: branch  fp8 merge  floor
    0.005      5e-05         0.98       0.52          1.1        0.52
    0.02       1.2e-05       0.77       0.13          0.78       0.13
    0.1        2.5e-06       0.26       0.026         0.27       0.026
    0.3        8.8e-07       0.093      0.0098        0.093      0.0088
  2) 5120x5120, 1024 tokens, 1 thread
    float32: 873 ms without, 897 ms with the rank-64 branch (+2.8 %; extra multiply-adds 2.5 %)
    bfloat16: 5281 ms without, 5647 ms with the rank-64 branch (+6.9 %; extra multiply-adds 2.5 %)
    (a second run: float32 879 / 907 ms, +3.2 %; bfloat16 5456 / 5808 ms, +6.4 %)

Reading: in fp32 the branch is exact to fp32 rounding. In bf16 its error equals the floor,
the rounding every bf16 layer has with or without a LoRA (at a 0.5 % change it is half as
large as the change itself), because the output is rounded once (engine.model.ops.CastLinear
adds the branch into the buffer the main product then accumulates into); a merged fp8
weight adds the fp8 rounding on top. The fp32 time cost matches the extra work,
r * (in + out) / (in * out); this CPU has no native bf16 matmul, so its bf16 numbers say
little about a GPU, where the branch also costs about two extra passes over the layer's
output and one over its input (memory traffic, not measured here).
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from packpath import load_pack  # noqa: E402

load_pack()
from wan22duo.engine.model.ops import CastLinear, LoraBranch, quantize_fp8  # noqa: E402

FP8 = torch.float8_e4m3fn
FRACTIONS = (0.005, 0.02, 0.1, 0.3)


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


def fp8_layer(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> CastLinear:
    layer = CastLinear(q.shape[1], q.shape[0])
    layer.weight = torch.nn.Parameter(q, requires_grad=False)
    layer.bias = torch.nn.Parameter(bias, requires_grad=False)
    layer.scale_weight = scale
    return layer


def relative(got: torch.Tensor, want: torch.Tensor, effect: torch.Tensor) -> float:
    return ((got.double() - want).norm() / effect.norm()).item()


def accuracy() -> None:
    torch.manual_seed(0)
    n, rank = 1024, 16
    q, s = quantize_fp8(torch.randn(n, n) * 0.02, FP8)
    weight = q.float() * s
    x = torch.randn(256, n)
    bias = torch.randn(n, generator=torch.Generator().manual_seed(1)) * 0.01  # apart: keeps 1a's stream
    generator = torch.Generator().manual_seed(0)
    merged_rows, output_rows = [], []
    for fraction in FRACTIONS:
        up, down = torch.randn(n, rank), torch.randn(rank, n)
        factor = (fraction * weight.norm() / (up @ down).norm()).item()
        delta = factor * (up @ down)
        exact = x @ delta.T

        def error(merged: torch.Tensor) -> float:
            return ((x @ (merged - weight).T - exact).norm() / exact.norm()).item()

        q2, s2 = quantize_fp8(weight + delta, FP8)
        merged_rows.append((fraction, error(q2.float() * s2), error(stochastic_fp8(weight + delta, generator)),
                            error((weight + delta).bfloat16().float())))

        base, merged = fp8_layer(q, s, bias), fp8_layer(q2, s2, bias)
        patched = fp8_layer(q, s, bias)
        patched.lora_branches = (LoraBranch(up, down, factor),)
        want = x.double() @ (weight.double() + delta.double()).T + bias.double()
        want_base = x.double() @ weight.double().T + bias.double()
        effect = (want - want_base)
        row = [fraction]
        with torch.no_grad():
            for dtype in (torch.float32, torch.bfloat16):
                xc = x.to(dtype)
                row += [relative(patched(xc), want, effect), relative(merged(xc), want, effect)]
            row.append(relative(base(x.bfloat16()), want_base, effect))
        output_rows.append(row)
    print("1a) merged weight, exact arithmetic")
    print("  delta/|W|  fp8 nearest  fp8 stochastic  bf16")
    for f, nearest, stochastic, bf16 in merged_rows:
        print(f"  {f:<10} {nearest:<12.2g} {stochastic:<15.3g} {bf16:.2g}")
    print("1b) layer output in the compute dtype vs float64")
    print("  delta/|W|  fp32: branch  fp8 merge  bf16: branch  fp8 merge  floor")
    for f, b32, m32, b16, m16, floor in output_rows:
        print(f"  {f:<10} {b32:<13.2g} {m32:<10.2g} {b16:<13.2g} {m16:<10.2g} {floor:.2g}")


def median_ms(layer: CastLinear, x: torch.Tensor, calls: int = 5) -> float:
    times = []
    with torch.no_grad():
        layer(x)  # warm-up
        for _ in range(calls):
            start = time.perf_counter()
            layer(x)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def speed(n: int = 5120, rank: int = 64, tokens: int = 1024) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    q, s = quantize_fp8(torch.randn(n, n) * 0.02, FP8)
    layer = fp8_layer(q, s, torch.zeros(n))
    branch = LoraBranch(torch.randn(n, rank) * 0.01, torch.randn(rank, n) * 0.01, 1.0)
    extra = rank * (n + n) / (n * n)
    print(f"2) {n}x{n}, {tokens} tokens, {torch.get_num_threads()} thread")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(tokens, n).to(dtype)
        layer.lora_branches = ()
        without = median_ms(layer, x)
        layer.lora_branches = (branch,)
        with_branch = median_ms(layer, x)
        print(f"  {str(dtype).split('.')[-1]}: {without:.0f} ms without, {with_branch:.0f} ms with the rank-{rank} "
              f"branch ({100 * (with_branch / without - 1):+.1f} %; extra multiply-adds {100 * extra:.1f} %)")


if __name__ == "__main__":
    accuracy()
    speed()
